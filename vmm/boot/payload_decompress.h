#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/arch/x86_64/bzimage.h"

namespace ember::vmm {

// Bigger than any real vmlinux; a header claiming more is hostile or corrupt.
constexpr std::uint32_t kMaxUncompressedKernel = 512u << 20;

// True for the payload formats DecompressPayload handles (all Linux offers but LZO).
[[nodiscard]] bool CanDecompress(arch::PayloadFormat format);

// Decompresses a bzImage payload with Debian's libraries, into exactly `expected_size`
// bytes (the size the kernel build appended). Corrupt input or a size mismatch is an
// InvalidArgument error naming the format.
[[nodiscard]] absl::StatusOr<std::vector<std::uint8_t>> DecompressPayload(
    arch::PayloadFormat format, std::span<const std::uint8_t> payload, std::uint32_t expected_size);

}  // namespace ember::vmm
