#include "vmm/base/guest_memory.h"

#include <gtest/gtest.h>

#include <array>

namespace ember::base {
namespace {

constexpr std::uint64_t kMiB = 1 << 20;

GuestMemory TwoRegions() {
  auto memory = GuestMemory::Create({{0, 2 * kMiB}, {16 * kMiB, 1 * kMiB}});
  EXPECT_TRUE(memory.ok()) << memory.status();
  return std::move(memory).value();
}

TEST(GuestMemory, RegionsAreLaidOutBackToBackInTheFile) {
  GuestMemory memory = TwoRegions();
  ASSERT_EQ(memory.regions().size(), 2u);
  EXPECT_EQ(memory.regions()[1].file_offset, 2 * kMiB);
  EXPECT_EQ(memory.total_size(), 3 * kMiB);
  EXPECT_EQ(memory.end(), 17 * kMiB);
}

TEST(GuestMemory, WriteThenReadRoundTrips) {
  GuestMemory memory = TwoRegions();
  ASSERT_TRUE(memory.WriteObj<std::uint64_t>(16 * kMiB + 8, 0x1122334455667788).ok());
  auto value = memory.ReadObj<std::uint64_t>(16 * kMiB + 8);
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, 0x1122334455667788u);
}

TEST(GuestMemory, AccessInTheHoleFails) {
  GuestMemory memory = TwoRegions();
  EXPECT_FALSE(memory.ReadObj<std::uint32_t>(4 * kMiB).ok());
}

TEST(GuestMemory, AccessStraddlingARegionEndFails) {
  GuestMemory memory = TwoRegions();
  EXPECT_FALSE(memory.ReadObj<std::uint64_t>(2 * kMiB - 4).ok());
  EXPECT_TRUE(memory.ReadObj<std::uint32_t>(2 * kMiB - 4).ok());
}

TEST(GuestMemory, LengthThatWrapsTheAddressSpaceFails) {
  GuestMemory memory = TwoRegions();
  EXPECT_FALSE(memory.Contains(0x1000, ~std::uint64_t{0}));
  EXPECT_FALSE(memory.Slice(0x1000, ~std::uint64_t{0} - 0x800).ok());
}

TEST(GuestMemory, UnalignedOrOverlappingRangesAreRejected) {
  EXPECT_FALSE(GuestMemory::Create({{0x10, 4096}}).ok());
  EXPECT_FALSE(GuestMemory::Create({{0, 8192}, {4096, 4096}}).ok());
  EXPECT_FALSE(GuestMemory::Create({}).ok());
}

}  // namespace
}  // namespace ember::base
