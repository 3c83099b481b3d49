#include "vmm/boot/payload_decompress.h"

#include "tests/unit/boot/compressors.h"

#include <gtest/gtest.h>
#include <lzma.h>

#include <cstring>

namespace ember::vmm {
namespace {

using arch::PayloadFormat;
using namespace ember::testing;  // the encoders

// Kernel-like content: compressible but not trivially so.
std::vector<std::uint8_t> SampleVmlinux() {
  std::vector<std::uint8_t> data(300 * 1024);
  std::uint32_t x = 12345;
  for (std::size_t i = 0; i < data.size(); ++i) {
    x = x * 1103515245 + 12345;
    data[i] = static_cast<std::uint8_t>((i % 64 < 32) ? (x >> 24) & 0x0f : i & 0xff);
  }
  return data;
}

struct Codec {
  PayloadFormat format;
  std::vector<std::uint8_t> (*encode)(const std::vector<std::uint8_t>&);
};

class PayloadDecompressTest : public ::testing::TestWithParam<Codec> {};

TEST_P(PayloadDecompressTest, RoundTripsExactly) {
  auto original = SampleVmlinux();
  auto payload = GetParam().encode(original);
  auto out = DecompressPayload(GetParam().format, payload,
                               static_cast<std::uint32_t>(original.size()));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, original);
}

TEST_P(PayloadDecompressTest, CorruptStreamIsAnError) {
  auto original = SampleVmlinux();
  auto payload = GetParam().encode(original);
  for (std::size_t i = 16; i < payload.size() / 2; ++i) payload[i] ^= 0x5a;
  auto out = DecompressPayload(GetParam().format, payload,
                               static_cast<std::uint32_t>(original.size()));
  EXPECT_FALSE(out.ok());
}

TEST_P(PayloadDecompressTest, TruncatedStreamIsAnError) {
  auto original = SampleVmlinux();
  auto payload = GetParam().encode(original);
  payload.resize(payload.size() / 2);
  EXPECT_FALSE(DecompressPayload(GetParam().format, payload,
                                 static_cast<std::uint32_t>(original.size()))
                   .ok());
}

TEST_P(PayloadDecompressTest, SizeMismatchIsAnError) {
  auto original = SampleVmlinux();
  auto payload = GetParam().encode(original);
  EXPECT_FALSE(DecompressPayload(GetParam().format, payload,
                                 static_cast<std::uint32_t>(original.size() + 1))
                   .ok());
}

INSTANTIATE_TEST_SUITE_P(Formats, PayloadDecompressTest,
                         ::testing::Values(Codec{PayloadFormat::kGzip, Gzip},
                                           Codec{PayloadFormat::kBzip2, Bzip2},
                                           Codec{PayloadFormat::kXz, Xz},
                                           Codec{PayloadFormat::kLzma, LzmaAlone},
                                           Codec{PayloadFormat::kZstd, Zstd},
                                           Codec{PayloadFormat::kLz4, Lz4Legacy}),
                         [](const auto& test_info) {
                           return std::string(arch::PayloadFormatName(test_info.param.format));
                         });

TEST(PayloadDecompress, LzoIsNotSupported) {
  EXPECT_FALSE(CanDecompress(PayloadFormat::kLzo));
  EXPECT_FALSE(DecompressPayload(PayloadFormat::kLzo, std::vector<std::uint8_t>(16), 100).ok());
}

TEST(PayloadDecompress, ImplausibleSizeIsRejectedBeforeAllocating) {
  auto out = DecompressPayload(PayloadFormat::kGzip, Gzip(SampleVmlinux()), 0xffffffff);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("implausible"), std::string::npos);
}

// An lzma_alone stream whose header asks for a `dict_size` dictionary: the header's
// bytes 1-4 (the decoder allocates what they say; the data needs far less).
std::vector<std::uint8_t> LzmaAloneWithDictionary(const std::vector<std::uint8_t>& data,
                                                  std::uint32_t dict_size) {
  std::vector<std::uint8_t> payload = LzmaAlone(data);
  std::memcpy(payload.data() + 1, &dict_size, sizeof(dict_size));
  return payload;
}

// An xz stream whose (only) block's LZMA2 filter asks for the dictionary that `props`
// encodes (2 or 3 times a power of two, spec'd by the .xz format), with the block header's
// CRC32 recomputed.
std::vector<std::uint8_t> XzWithDictionary(const std::vector<std::uint8_t>& data,
                                           std::uint8_t props) {
  std::vector<std::uint8_t> payload = Xz(data);
  constexpr std::size_t kBlockHeader = 12;  // after the stream header
  const std::size_t header_size = (std::size_t{payload[kBlockHeader]} + 1) * 4;
  const std::size_t crc_at = kBlockHeader + header_size - 4;
  // The filter flags end the header: LZMA2's id 0x21, one property byte, then padding.
  std::size_t props_at = 0;
  for (std::size_t i = kBlockHeader + 2; i + 2 < crc_at; ++i) {
    if (payload[i] == 0x21 && payload[i + 1] == 0x01) props_at = i + 2;
  }
  EXPECT_NE(props_at, 0u) << "no LZMA2 filter in the block header";
  payload[props_at] = props;
  const std::uint32_t crc = lzma_crc32(payload.data() + kBlockHeader, header_size - 4, 0);
  std::memcpy(payload.data() + crc_at, &crc, sizeof(crc));
  return payload;
}

TEST(PayloadDecompress, LzmaAskingForAGibibyteDictionaryIsRefused) {
  const auto original = SampleVmlinux();
  auto out = DecompressPayload(PayloadFormat::kLzma,
                               LzmaAloneWithDictionary(original, 1u << 30),
                               static_cast<std::uint32_t>(original.size()));
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("MiB of memory to decompress; at most 128 MiB"),
            std::string::npos)
      << out.status();
}

TEST(PayloadDecompress, XzAskingForAGibibyteDictionaryIsRefused) {
  const auto original = SampleVmlinux();
  // Property 36: 2 << (36 / 2 + 11) = 1 GiB.
  auto out = DecompressPayload(PayloadFormat::kXz, XzWithDictionary(original, 36),
                               static_cast<std::uint32_t>(original.size()));
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("at most 128 MiB"), std::string::npos) << out.status();
}

// What the kernel's own build asks for stays within the limit.
TEST(PayloadDecompress, KernelBuildDictionariesAreAccepted) {
  const auto original = SampleVmlinux();
  const auto size = static_cast<std::uint32_t>(original.size());
  auto lzma = DecompressPayload(PayloadFormat::kLzma,
                                LzmaAloneWithDictionary(original, 64u << 20), size);  // lzma -9
  ASSERT_TRUE(lzma.ok()) << lzma.status();
  EXPECT_EQ(*lzma, original);
  // Property 26: 2 << (26 / 2 + 11) = 32 MiB, scripts/xz_wrap.sh's dictionary.
  auto xz = DecompressPayload(PayloadFormat::kXz, XzWithDictionary(original, 26), size);
  ASSERT_TRUE(xz.ok()) << xz.status();
  EXPECT_EQ(*xz, original);
}

}  // namespace
}  // namespace ember::vmm
