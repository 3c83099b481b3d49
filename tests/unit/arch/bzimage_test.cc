#include "vmm/arch/x86_64/bzimage.h"

#include <gtest/gtest.h>

#include "tests/unit/boot/fake_bzimage.h"

namespace ember::arch {
namespace {

using ember::testing::FakeBzImage;

TEST(BzImage, ValidImageParsesHeaderPayloadAndSize) {
  FakeBzImage fake({0x1f, 0x8b, 1, 2, 3}, 12345);
  auto bz = ParseBzImage(fake.bytes);
  ASSERT_TRUE(bz.ok()) << bz.status();
  EXPECT_EQ(bz->format, PayloadFormat::kGzip);
  EXPECT_EQ(bz->uncompressed_size, 12345u);
  EXPECT_EQ(bz->payload.size(), 5u + 4u);
  EXPECT_EQ(bz->header.version, 0x020f);
  EXPECT_EQ(bz->protected_mode.data(), fake.bytes.data() + FakeBzImage::kProtectedModeOffset);
}

TEST(BzImage, PayloadFormatIsDetectedFromItsMagic) {
  struct Case {
    std::vector<std::uint8_t> magic;
    PayloadFormat format;
  };
  for (const Case& c : std::vector<Case>{{{0x1f, 0x8b}, PayloadFormat::kGzip},
                                         {{'B', 'Z', 'h'}, PayloadFormat::kBzip2},
                                         {{0xfd, '7', 'z', 'X', 'Z', 0}, PayloadFormat::kXz},
                                         {{0x28, 0xb5, 0x2f, 0xfd}, PayloadFormat::kZstd},
                                         {{0x02, 0x21, 0x4c, 0x18}, PayloadFormat::kLz4},
                                         {{0x89, 'L', 'Z', 'O'}, PayloadFormat::kLzo},
                                         {{0x5d, 0, 0}, PayloadFormat::kLzma},
                                         {{1, 2, 3}, PayloadFormat::kUnknown}}) {
    FakeBzImage fake(c.magic, 100);
    auto bz = ParseBzImage(fake.bytes);
    ASSERT_TRUE(bz.ok());
    EXPECT_EQ(bz->format, c.format) << PayloadFormatName(c.format);
  }
}

TEST(BzImage, TruncatedHeaderIsRejected) {
  FakeBzImage fake({0x1f, 0x8b}, 100);
  fake.bytes.resize(0x220);
  auto bz = ParseBzImage(fake.bytes);
  ASSERT_FALSE(bz.ok());
  EXPECT_NE(bz.status().message().find("truncated"), std::string::npos);
}

TEST(BzImage, TruncatedPayloadIsRejected) {
  FakeBzImage fake({0x1f, 0x8b, 1, 2, 3, 4, 5, 6}, 100);
  // Cut the file in the middle of the payload.
  fake.bytes.resize(FakeBzImage::kProtectedModeOffset + FakeBzImage::kPayloadOffset + 4);
  auto bz = ParseBzImage(fake.bytes);
  ASSERT_FALSE(bz.ok());
  EXPECT_NE(bz.status().message().find("payload lies beyond"), std::string::npos);
}

TEST(BzImage, MissingMagicIsRejected) {
  FakeBzImage fake({0x1f, 0x8b}, 100);
  fake.bytes[0x202] = 'X';
  EXPECT_FALSE(LooksLikeBzImage(fake.bytes));
  EXPECT_FALSE(ParseBzImage(fake.bytes).ok());
}

TEST(BzImage, TooOldProtocolIsRejected) {
  FakeBzImage fake({0x1f, 0x8b}, 100);
  fake.header().version = 0x020a;
  fake.Commit();
  auto bz = ParseBzImage(fake.bytes);
  ASSERT_FALSE(bz.ok());
  EXPECT_NE(bz.status().message().find("2.10 is too old"), std::string::npos)
      << bz.status().message();
}

TEST(BzImage, ThirtyTwoBitOnlyKernelIsRejected) {
  FakeBzImage fake({0x1f, 0x8b}, 100);
  fake.header().xloadflags = 0;
  fake.Commit();
  auto bz = ParseBzImage(fake.bytes);
  ASSERT_FALSE(bz.ok());
  EXPECT_NE(bz.status().message().find("32-bit-only"), std::string::npos);
}

TEST(BzImage, NonRelocatableKernelIsRejected) {
  FakeBzImage fake({0x1f, 0x8b}, 100);
  fake.header().relocatable_kernel = 0;
  fake.Commit();
  EXPECT_FALSE(ParseBzImage(fake.bytes).ok());
}

TEST(BzImage, KernelAlignmentThatIsNotAPowerOfTwoIsRejected) {
  FakeBzImage fake({0x1f, 0x8b}, 100);
  fake.header().kernel_alignment = 0x300000;
  fake.Commit();
  auto bz = ParseBzImage(fake.bytes);
  ASSERT_FALSE(bz.ok());
  EXPECT_EQ(bz.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bz.status().message().find("kernel_alignment 0x300000 is not a power of two"),
            std::string::npos)
      << bz.status();
}

TEST(BzImage, ZeroKernelAlignmentIsRejected) {
  FakeBzImage fake({0x1f, 0x8b}, 100);
  fake.header().kernel_alignment = 0;
  fake.Commit();
  EXPECT_FALSE(ParseBzImage(fake.bytes).ok());
}

TEST(BzImage, InitSizeSmallerThanTheKernelIsRejected) {
  FakeBzImage fake({0x1f, 0x8b}, 100);
  fake.header().init_size = 16;
  fake.Commit();
  EXPECT_FALSE(ParseBzImage(fake.bytes).ok());
}

}  // namespace
}  // namespace ember::arch
