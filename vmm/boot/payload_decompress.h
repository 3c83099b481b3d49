#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/arch/x86_64/bzimage.h"

namespace ember::vmm {

// Bigger than any real vmlinux; a header claiming more is hostile or corrupt. The output
// buffer is allocated at the claimed size, so this also bounds what a kernel file can make
// the VMM allocate for it.
constexpr std::uint32_t kMaxUncompressedKernel = 512u << 20;
// The most working memory a decompressor may take besides its output. Only xz and lzma
// need a limit: their dictionary is sized by the stream's header (up to 4 GiB), and the
// kernel's build uses 32 MiB (xz) and 64 MiB (lzma -9). The others are bounded by their
// format: gzip a 32 KiB window, bzip2 under 4 MiB at block size 9, zstd and lz4 none
// beyond a small context, since each decompresses in one call into the output buffer.
constexpr std::uint64_t kMaxDecompressorMemory = 128u << 20;

// True for the payload formats DecompressPayload handles (all Linux offers but LZO).
[[nodiscard]] bool CanDecompress(arch::PayloadFormat format);

// Decompresses a bzImage payload with Debian's libraries, into exactly `expected_size`
// bytes (the size the kernel build appended). Corrupt input, a size mismatch, or a stream
// that needs more than kMaxDecompressorMemory is an InvalidArgument error naming the format.
[[nodiscard]] absl::StatusOr<std::vector<std::uint8_t>> DecompressPayload(
    arch::PayloadFormat format, std::span<const std::uint8_t> payload, std::uint32_t expected_size);

}  // namespace ember::vmm
