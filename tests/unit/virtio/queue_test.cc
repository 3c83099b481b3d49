#include "virtio/queue.h"

#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "virtio/spec.h"
#include "virtio/testing/fake_driver_queue.h"

namespace ember::virtio {
namespace {

using testing::FakeBuffer;
using testing::FakeDriverQueue;
using testing::FakeGuestAllocator;

constexpr std::uint64_t kMemSize = 1 << 20;
constexpr base::GuestAddress kQueueBase = 0x1000;
constexpr std::uint16_t kSize = 16;
constexpr std::uint64_t kAllFeatures =
    FeatureBit(kFeatureVersion1) | FeatureBit(kFeatureIndirectDesc);

class QueueTest : public ::testing::Test {
 protected:
  QueueTest()
      : memory_(base::GuestMemory::Create({{0, kMemSize}}).value()),
        driver_(memory_, kQueueBase, kSize),
        alloc_(0x10000, kMemSize - 0x10000) {}

  Queue MakeQueue(std::uint64_t features = kAllFeatures) {
    auto queue = Queue::Create(memory_, driver_.layout(), kSize, features);
    EXPECT_TRUE(queue.ok()) << queue.status();
    return std::move(queue).value();
  }

  // Pops and expects the chain to be rejected with a message containing `what`.
  void ExpectRejected(Queue& queue, const std::string& what) {
    auto chain = queue.Pop();
    ASSERT_FALSE(chain.ok());
    EXPECT_NE(std::string(chain.status().message()).find(what), std::string::npos)
        << chain.status();
  }

  base::GuestMemory memory_;
  FakeDriverQueue driver_;
  FakeGuestAllocator alloc_;
};

TEST_F(QueueTest, PopOnEmptyQueueReturnsNothing) {
  Queue queue = MakeQueue();
  auto chain = queue.Pop();
  ASSERT_TRUE(chain.ok());
  EXPECT_FALSE(chain->has_value());
}

TEST_F(QueueTest, PopReturnsReadableThenWritableBuffers) {
  Queue queue = MakeQueue();
  const std::array<FakeBuffer, 3> buffers{{{alloc_.Alloc(16), 16, false},
                                           {alloc_.Alloc(512), 512, true},
                                           {alloc_.Alloc(1), 1, true}}};
  const std::uint16_t head = driver_.AddChain(buffers);

  auto chain = queue.Pop();

  ASSERT_TRUE(chain.ok()) << chain.status();
  ASSERT_TRUE(chain->has_value());
  const DescriptorChain& c = **chain;
  EXPECT_EQ(c.head, head);
  ASSERT_EQ(c.descriptors.size(), 3u);
  EXPECT_EQ(c.readable_count, 1u);
  EXPECT_EQ(c.readable_bytes, 16u);
  EXPECT_EQ(c.writable_bytes, 513u);
  EXPECT_EQ(c.descriptors[1].addr, buffers[1].addr);
  EXPECT_TRUE(c.descriptors[2].device_writable);
  EXPECT_EQ(c.descriptors[1].host.data(), memory_.Slice(buffers[1].addr, 512)->data());
}

TEST_F(QueueTest, PopTakesChainsInAvailableOrder) {
  Queue queue = MakeQueue();
  const FakeBuffer a{alloc_.Alloc(8), 8, false};
  const FakeBuffer b{alloc_.Alloc(8), 8, false};
  const std::uint16_t head_a = driver_.AddChain(std::span(&a, 1));
  const std::uint16_t head_b = driver_.AddChain(std::span(&b, 1));

  EXPECT_EQ((*queue.Pop())->head, head_a);
  EXPECT_EQ((*queue.Pop())->head, head_b);
  EXPECT_FALSE(queue.Pop()->has_value());
}

TEST_F(QueueTest, UndoPopReturnsTheSameChainAgain) {
  Queue queue = MakeQueue();
  const FakeBuffer a{alloc_.Alloc(8), 8, false};
  const std::uint16_t head = driver_.AddChain(std::span(&a, 1));
  ASSERT_TRUE(queue.Pop()->has_value());

  queue.UndoPop();

  auto again = queue.Pop();
  ASSERT_TRUE(again.ok() && again->has_value());
  EXPECT_EQ((*again)->head, head);
}

TEST_F(QueueTest, IndirectChainIsFollowedWhenNegotiated) {
  Queue queue = MakeQueue();
  const std::array<FakeBuffer, 3> buffers{{{alloc_.Alloc(16), 16, false},
                                           {alloc_.Alloc(4096), 4096, true},
                                           {alloc_.Alloc(1), 1, true}}};
  driver_.AddIndirectChain(alloc_.Alloc(48), buffers);

  auto chain = queue.Pop();

  ASSERT_TRUE(chain.ok()) << chain.status();
  ASSERT_TRUE(chain->has_value());
  ASSERT_EQ((*chain)->descriptors.size(), 3u);
  EXPECT_EQ((*chain)->descriptors[1].addr, buffers[1].addr);
  EXPECT_EQ((*chain)->writable_bytes, 4097u);
}

TEST_F(QueueTest, IndirectChainWithoutTheFeatureIsRejected) {
  Queue queue = MakeQueue(FeatureBit(kFeatureVersion1));
  const FakeBuffer b{alloc_.Alloc(16), 16, false};
  driver_.AddIndirectChain(alloc_.Alloc(16), std::span(&b, 1));
  ExpectRejected(queue, "VIRTIO_F_INDIRECT_DESC");
}

// --- Layout checks at queue creation -------------------------------------------------------

TEST_F(QueueTest, CreateRejectsSizeNotPowerOfTwo) {
  QueueLayout layout = driver_.layout();
  layout.size = 12;
  EXPECT_FALSE(Queue::Create(memory_, layout, kSize, kAllFeatures).ok());
}

TEST_F(QueueTest, CreateRejectsZeroSize) {
  QueueLayout layout = driver_.layout();
  layout.size = 0;
  EXPECT_FALSE(Queue::Create(memory_, layout, kSize, kAllFeatures).ok());
}

TEST_F(QueueTest, CreateRejectsSizeAboveMaximum) {
  QueueLayout layout = driver_.layout();
  layout.size = 32;
  EXPECT_FALSE(Queue::Create(memory_, layout, kSize, kAllFeatures).ok());
}

TEST_F(QueueTest, CreateRejectsMisalignedDescriptorTable) {
  QueueLayout layout = driver_.layout();
  layout.desc_table += 8;
  EXPECT_FALSE(Queue::Create(memory_, layout, kSize, kAllFeatures).ok());
}

TEST_F(QueueTest, CreateRejectsMisalignedAvailRing) {
  QueueLayout layout = driver_.layout();
  layout.avail_ring += 1;
  EXPECT_FALSE(Queue::Create(memory_, layout, kSize, kAllFeatures).ok());
}

TEST_F(QueueTest, CreateRejectsMisalignedUsedRing) {
  QueueLayout layout = driver_.layout();
  layout.used_ring += 2;
  EXPECT_FALSE(Queue::Create(memory_, layout, kSize, kAllFeatures).ok());
}

TEST_F(QueueTest, CreateRejectsUsedRingPastTheEndOfMemory) {
  QueueLayout layout = driver_.layout();
  layout.used_ring = kMemSize - 8;
  EXPECT_FALSE(Queue::Create(memory_, layout, kSize, kAllFeatures).ok());
}

TEST_F(QueueTest, CreateRejectsRingAtWrappingAddress) {
  QueueLayout layout = driver_.layout();
  layout.desc_table = ~std::uint64_t{0xf};
  EXPECT_FALSE(Queue::Create(memory_, layout, kSize, kAllFeatures).ok());
}

// --- Malformed chains ----------------------------------------------------------------------

TEST_F(QueueTest, AvailIndexTooFarAheadIsRejected) {
  Queue queue = MakeQueue();
  driver_.SetAvailIdx(kSize + 1);
  ExpectRejected(queue, "ahead of the device");
}

TEST_F(QueueTest, HeadBeyondQueueSizeIsRejected) {
  Queue queue = MakeQueue();
  driver_.Publish(kSize);
  ExpectRejected(queue, "beyond the queue size");
}

TEST_F(QueueTest, NextIndexBeyondQueueSizeIsRejected) {
  Queue queue = MakeQueue();
  driver_.WriteDescriptor(0, alloc_.Alloc(8), 8, kDescFlagNext, kSize + 3);
  driver_.Publish(0);
  ExpectRejected(queue, "next index");
}

TEST_F(QueueTest, LoopingChainIsRejected) {
  Queue queue = MakeQueue();
  const base::GuestAddress buf = alloc_.Alloc(8);
  driver_.WriteDescriptor(0, buf, 8, kDescFlagNext, 1);
  driver_.WriteDescriptor(1, buf, 8, kDescFlagNext, 0);
  driver_.Publish(0);
  ExpectRejected(queue, "loops");
}

TEST_F(QueueTest, SelfLoopIsRejected) {
  Queue queue = MakeQueue();
  driver_.WriteDescriptor(5, alloc_.Alloc(8), 8, kDescFlagNext, 5);
  driver_.Publish(5);
  ExpectRejected(queue, "loops");
}

TEST_F(QueueTest, LoopInsideIndirectTableIsRejected) {
  Queue queue = MakeQueue();
  const base::GuestAddress table = alloc_.Alloc(32);
  const base::GuestAddress buf = alloc_.Alloc(8);
  driver_.WriteIndirectDescriptor(table, 0, buf, 8, kDescFlagNext, 1);
  driver_.WriteIndirectDescriptor(table, 1, buf, 8, kDescFlagNext, 0);
  driver_.WriteDescriptor(0, table, 32, kDescFlagIndirect, 0);
  driver_.Publish(0);
  ExpectRejected(queue, "loops");
}

TEST_F(QueueTest, BufferOutsideGuestMemoryIsRejected) {
  Queue queue = MakeQueue();
  driver_.WriteDescriptor(0, kMemSize + 0x1000, 8, 0, 0);
  driver_.Publish(0);
  ExpectRejected(queue, "outside guest memory");
}

TEST_F(QueueTest, BufferStraddlingTheEndOfMemoryIsRejected) {
  Queue queue = MakeQueue();
  driver_.WriteDescriptor(0, kMemSize - 4, 8, 0, 0);
  driver_.Publish(0);
  ExpectRejected(queue, "outside guest memory");
}

TEST_F(QueueTest, BufferWhoseEndOverflowsIsRejected) {
  Queue queue = MakeQueue();
  driver_.WriteDescriptor(0, 0x1000, 0xffffffff, 0, 0);
  driver_.WriteDescriptor(1, ~std::uint64_t{0} - 0x10, 0x100, 0, 0);
  driver_.Publish(1);
  ExpectRejected(queue, "outside guest memory");
}

TEST_F(QueueTest, ReadableAfterWritableIsRejected) {
  Queue queue = MakeQueue();
  const std::array<FakeBuffer, 2> buffers{{{alloc_.Alloc(8), 8, true},
                                           {alloc_.Alloc(8), 8, false}}};
  driver_.AddChain(buffers);
  ExpectRejected(queue, "device-readable descriptor after a device-writable");
}

TEST_F(QueueTest, IndirectDescriptorWithNextIsRejected) {
  Queue queue = MakeQueue();
  const base::GuestAddress table = alloc_.Alloc(16);
  driver_.WriteIndirectDescriptor(table, 0, alloc_.Alloc(8), 8, 0, 0);
  driver_.WriteDescriptor(0, table, 16, kDescFlagIndirect | kDescFlagNext, 1);
  driver_.WriteDescriptor(1, alloc_.Alloc(8), 8, 0, 0);
  driver_.Publish(0);
  ExpectRejected(queue, "also has VIRTQ_DESC_F_NEXT");
}

TEST_F(QueueTest, NestedIndirectTableIsRejected) {
  Queue queue = MakeQueue();
  const base::GuestAddress inner = alloc_.Alloc(16);
  const base::GuestAddress outer = alloc_.Alloc(16);
  driver_.WriteIndirectDescriptor(inner, 0, alloc_.Alloc(8), 8, 0, 0);
  driver_.WriteIndirectDescriptor(outer, 0, inner, 16, kDescFlagIndirect, 0);
  driver_.WriteDescriptor(0, outer, 16, kDescFlagIndirect, 0);
  driver_.Publish(0);
  ExpectRejected(queue, "inside an indirect table");
}

TEST_F(QueueTest, EmptyIndirectTableIsRejected) {
  Queue queue = MakeQueue();
  driver_.WriteDescriptor(0, alloc_.Alloc(16), 0, kDescFlagIndirect, 0);
  driver_.Publish(0);
  ExpectRejected(queue, "indirect table length");
}

TEST_F(QueueTest, IndirectTableLengthNotMultipleOf16IsRejected) {
  Queue queue = MakeQueue();
  driver_.WriteDescriptor(0, alloc_.Alloc(32), 24, kDescFlagIndirect, 0);
  driver_.Publish(0);
  ExpectRejected(queue, "indirect table length");
}

TEST_F(QueueTest, IndirectTableOutsideGuestMemoryIsRejected) {
  Queue queue = MakeQueue();
  driver_.WriteDescriptor(0, kMemSize - 16, 32, kDescFlagIndirect, 0);
  driver_.Publish(0);
  ExpectRejected(queue, "indirect table 0x");
}

TEST_F(QueueTest, IndirectChainLongerThanQueueIsRejected) {
  Queue queue = MakeQueue();
  std::vector<FakeBuffer> buffers(kSize + 1, FakeBuffer{alloc_.Alloc(8), 8, false});
  driver_.AddIndirectChain(alloc_.Alloc(16 * buffers.size()), buffers);
  ExpectRejected(queue, "longer than the queue size");
}

TEST_F(QueueTest, ChainOfExactlyQueueSizeIsAccepted) {
  Queue queue = MakeQueue();
  std::vector<FakeBuffer> buffers(kSize, FakeBuffer{alloc_.Alloc(8), 8, false});
  driver_.AddChain(buffers);
  auto chain = queue.Pop();
  ASSERT_TRUE(chain.ok()) << chain.status();
  EXPECT_EQ((*chain)->descriptors.size(), kSize);
}

// --- Used ring and notification suppression ------------------------------------------------

TEST_F(QueueTest, AddUsedPublishesElementAndIndex) {
  Queue queue = MakeQueue();
  const FakeBuffer b{alloc_.Alloc(64), 64, true};
  const std::uint16_t head = driver_.AddChain(std::span(&b, 1));
  ASSERT_TRUE(queue.Pop()->has_value());

  queue.AddUsed(head, 42);

  EXPECT_EQ(driver_.UsedIdx(), 1);
  auto used = driver_.PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->id, head);
  EXPECT_EQ(used->len, 42u);
}

TEST_F(QueueTest, UsedRingWrapsAroundAfterQueueSizeEntries) {
  Queue queue = MakeQueue();
  const FakeBuffer b{alloc_.Alloc(8), 8, true};
  for (int i = 0; i < 3 * kSize; ++i) {
    const std::uint16_t head = driver_.AddChain(std::span(&b, 1));
    auto chain = queue.Pop();
    ASSERT_TRUE(chain.ok() && chain->has_value()) << i;
    queue.AddUsed((*chain)->head, static_cast<std::uint32_t>(i));
    auto used = driver_.PopUsed();
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->id, head);
    EXPECT_EQ(used->len, static_cast<std::uint32_t>(i));
  }
}

TEST_F(QueueTest, NoInterruptWhenNothingWasUsed) {
  Queue queue = MakeQueue();
  EXPECT_FALSE(queue.NeedsInterrupt());
}

TEST_F(QueueTest, InterruptAfterUsedWithoutEventIdx) {
  Queue queue = MakeQueue();
  queue.AddUsed(0, 0);
  EXPECT_TRUE(queue.NeedsInterrupt());
  EXPECT_FALSE(queue.NeedsInterrupt());
}

TEST_F(QueueTest, NoInterruptFlagSuppressesInterruptWithoutEventIdx) {
  Queue queue = MakeQueue();
  driver_.SetAvailFlags(kAvailFlagNoInterrupt);
  queue.AddUsed(0, 0);
  EXPECT_FALSE(queue.NeedsInterrupt());
}

TEST_F(QueueTest, EventIdxInterruptsOnlyWhenUsedEventIsCrossed) {
  Queue queue = MakeQueue(kAllFeatures | FeatureBit(kFeatureEventIdx));
  driver_.SetUsedEvent(2);  // "interrupt me once used idx passes 2"
  queue.AddUsed(0, 0);      // used idx 1
  EXPECT_FALSE(queue.NeedsInterrupt());
  queue.AddUsed(1, 0);  // used idx 2
  EXPECT_FALSE(queue.NeedsInterrupt());
  queue.AddUsed(2, 0);  // used idx 3: crosses used_event
  EXPECT_TRUE(queue.NeedsInterrupt());
}

TEST_F(QueueTest, EventIdxIgnoresNoInterruptFlag) {
  Queue queue = MakeQueue(kAllFeatures | FeatureBit(kFeatureEventIdx));
  driver_.SetAvailFlags(kAvailFlagNoInterrupt);
  driver_.SetUsedEvent(0);
  queue.AddUsed(0, 0);
  EXPECT_TRUE(queue.NeedsInterrupt());
}

TEST_F(QueueTest, DisableNotificationSetsNoNotifyWithoutEventIdx) {
  Queue queue = MakeQueue();
  queue.DisableNotification();
  EXPECT_EQ(driver_.UsedFlags(), kUsedFlagNoNotify);
  EXPECT_FALSE(queue.EnableNotification());
  EXPECT_EQ(driver_.UsedFlags(), 0);
}

TEST_F(QueueTest, EnableNotificationPublishesAvailEventWithEventIdx) {
  Queue queue = MakeQueue(kAllFeatures | FeatureBit(kFeatureEventIdx));
  const FakeBuffer b{alloc_.Alloc(8), 8, false};
  driver_.AddChain(std::span(&b, 1));
  driver_.AddChain(std::span(&b, 1));
  ASSERT_TRUE(queue.Pop()->has_value());
  ASSERT_TRUE(queue.Pop()->has_value());

  EXPECT_FALSE(queue.EnableNotification());

  EXPECT_EQ(driver_.AvailEvent(), 2);
}

TEST_F(QueueTest, EnableNotificationReportsBuffersThatArrivedMeanwhile) {
  Queue queue = MakeQueue(kAllFeatures | FeatureBit(kFeatureEventIdx));
  const FakeBuffer b{alloc_.Alloc(8), 8, false};
  driver_.AddChain(std::span(&b, 1));
  EXPECT_TRUE(queue.EnableNotification());
}

TEST_F(QueueTest, RestoredPositionsContinueFromTheSnapshot) {
  Queue queue = MakeQueue();
  const FakeBuffer b{alloc_.Alloc(8), 8, false};
  driver_.SetAvailIdx(5);  // as if five chains had been consumed before the snapshot
  const std::uint16_t head = driver_.AddChain(std::span(&b, 1));
  queue.RestorePositions(5, 5);

  auto chain = queue.Pop();

  ASSERT_TRUE(chain.ok() && chain->has_value());
  EXPECT_EQ((*chain)->head, head);
  EXPECT_EQ(queue.next_avail(), 6);
}

}  // namespace
}  // namespace ember::virtio
