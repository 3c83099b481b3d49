#pragma once

#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "vmm/base/guest_memory.h"

namespace ember::arch {

struct LoadedKernel {
  std::uint64_t entry;       // guest-physical 64-bit entry point
  std::uint64_t end;         // first guest-physical byte past the loaded image
};

// Loads an x86-64 ELF executable (a vmlinux, or Ember's test guest) into guest memory at its
// segments' physical addresses. Every header field is checked against the file and against
// guest memory first, so a malformed or hostile image gives an error, never a crash or a
// write outside guest RAM. Segments may not reach below kHimemStart, where the zero page,
// page tables and command line live.
[[nodiscard]] absl::StatusOr<LoadedKernel> LoadElfKernel(std::span<const std::uint8_t> image,
                                                         const base::GuestMemory& memory);

// True when `image` starts with the ELF magic (format detection by content, not name).
[[nodiscard]] bool LooksLikeElf(std::span<const std::uint8_t> image);

}  // namespace ember::arch
