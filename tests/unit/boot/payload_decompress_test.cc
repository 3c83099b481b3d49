#include "vmm/boot/payload_decompress.h"

#include "tests/unit/boot/compressors.h"

#include <gtest/gtest.h>


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

}  // namespace
}  // namespace ember::vmm
