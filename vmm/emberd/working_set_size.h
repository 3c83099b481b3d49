#pragma once

#include <cstdint>

namespace ember::emberd {

// The largest well-formed recorded working set (snapshot/working_set.h's format) for
// `memory_bytes` of guest memory: a 40-byte header, a 16-byte run for every other 4 KiB page
// and an 8-byte CRC. emberd bounds every set it reads or hands on by it.
[[nodiscard]] constexpr std::uint64_t MaxWorkingSetBytes(std::uint64_t memory_bytes) {
  return 40 + 16 * ((memory_bytes / 4096 + 1) / 2) + 8;
}

}  // namespace ember::emberd
