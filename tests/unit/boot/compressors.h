#pragma once

#include <cstdint>
#include <vector>

// Encoders that pack a vmlinux the way the kernel's build packs a bzImage payload (the
// stream followed by the 4-byte uncompressed size), for tests of the decompressors.
namespace ember::testing {

std::vector<std::uint8_t> Gzip(const std::vector<std::uint8_t>& in);
std::vector<std::uint8_t> Bzip2(const std::vector<std::uint8_t>& in);
std::vector<std::uint8_t> Xz(const std::vector<std::uint8_t>& in);
std::vector<std::uint8_t> LzmaAlone(const std::vector<std::uint8_t>& in);
std::vector<std::uint8_t> Zstd(const std::vector<std::uint8_t>& in);
std::vector<std::uint8_t> Lz4Legacy(const std::vector<std::uint8_t>& in);

}  // namespace ember::testing
