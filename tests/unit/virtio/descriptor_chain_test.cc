#include "virtio/descriptor_chain.h"

#include <gtest/gtest.h>

#include <array>

namespace ember::virtio {
namespace {

// Two readable pieces "abc" + "defg" and two writable pieces of 2 and 3 bytes.
class DescriptorChainTest : public ::testing::Test {
 protected:
  DescriptorChainTest() {
    chain_.descriptors.push_back({0x100, 3, false, std::span(r0_)});
    chain_.descriptors.push_back({0x200, 4, false, std::span(r1_)});
    chain_.descriptors.push_back({0x300, 2, true, std::span(w0_)});
    chain_.descriptors.push_back({0x400, 3, true, std::span(w1_)});
    chain_.readable_count = 2;
    chain_.readable_bytes = 7;
    chain_.writable_bytes = 5;
  }

  std::array<std::uint8_t, 3> r0_{'a', 'b', 'c'};
  std::array<std::uint8_t, 4> r1_{'d', 'e', 'f', 'g'};
  std::array<std::uint8_t, 2> w0_{};
  std::array<std::uint8_t, 3> w1_{};
  DescriptorChain chain_;
};

TEST_F(DescriptorChainTest, CopyFromReadableSpansDescriptors) {
  std::array<std::uint8_t, 4> out{};
  ASSERT_TRUE(chain_.CopyFromReadable(2, out));
  EXPECT_EQ(std::string(out.begin(), out.end()), "cdef");
}

TEST_F(DescriptorChainTest, CopyFromReadablePastTheEndFails) {
  std::array<std::uint8_t, 4> out{};
  EXPECT_FALSE(chain_.CopyFromReadable(4, out));
}

TEST_F(DescriptorChainTest, CopyToWritableSpansDescriptors) {
  const std::array<std::uint8_t, 3> data{'x', 'y', 'z'};
  ASSERT_TRUE(chain_.CopyToWritable(1, data));
  EXPECT_EQ(w0_[1], 'x');
  EXPECT_EQ(w1_[0], 'y');
  EXPECT_EQ(w1_[1], 'z');
}

TEST_F(DescriptorChainTest, WritableIoVecsCoverTheRequestedRange) {
  IoVecs iovs;
  ASSERT_TRUE(chain_.WritableIoVecs(1, 3, &iovs));
  ASSERT_EQ(iovs.size(), 2u);
  EXPECT_EQ(iovs[0].iov_base, w0_.data() + 1);
  EXPECT_EQ(iovs[0].iov_len, 1u);
  EXPECT_EQ(iovs[1].iov_base, w1_.data());
  EXPECT_EQ(iovs[1].iov_len, 2u);
}

TEST_F(DescriptorChainTest, ReadableIoVecsPastTheEndFail) {
  IoVecs iovs;
  EXPECT_FALSE(chain_.ReadableIoVecs(0, 8, &iovs));
}

TEST_F(DescriptorChainTest, WritableByteFindsTheLastByte) {
  EXPECT_EQ(chain_.WritableByte(4), w1_.data() + 2);
  EXPECT_EQ(chain_.WritableByte(5), nullptr);
}

}  // namespace
}  // namespace ember::virtio
