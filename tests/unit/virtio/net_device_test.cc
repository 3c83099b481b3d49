#include "virtio/net/net_device.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "tests/unit/virtio/device_harness.h"
#include "virtio/mmio/registers.h"
#include "virtio/spec.h"
#include "virtio/testing/fake_driver_queue.h"
#include "virtio/testing/fake_net.h"

namespace ember::virtio::net {
namespace {

using testing::DeviceHarness;
using testing::FakeDriverQueue;
using testing::FakeNetDriver;
using testing::FakeTapPeer;

constexpr std::uint64_t kMemSize = 8 << 20;
constexpr std::uint16_t kQueueSize = 64;
constexpr std::uint64_t kBaseFeatures =
    FeatureBit(kFeatureVersion1) | FeatureBit(kFeatureEventIdx) | FeatureBit(kFeatureCsum) |
    FeatureBit(kFeatureGuestCsum) | FeatureBit(kFeatureHostTso4) | FeatureBit(kFeatureGuestTso4);
constexpr std::uint64_t kMrgFeatures = kBaseFeatures | FeatureBit(kFeatureMrgRxbuf);

std::vector<std::uint8_t> Payload(std::size_t len, std::uint8_t seed = 1) {
  std::vector<std::uint8_t> bytes(len);
  for (std::size_t i = 0; i < len; ++i) bytes[i] = static_cast<std::uint8_t>(seed + i * 13);
  return bytes;
}

std::vector<std::uint8_t> Header(std::uint8_t flags = 0, std::uint8_t gso = kGsoNone,
                                 std::uint16_t gso_size = 0, std::uint16_t csum_start = 0,
                                 std::uint16_t csum_offset = 0) {
  VirtioNetHeader h{flags, gso, 54, gso_size, csum_start, csum_offset, 0};
  std::vector<std::uint8_t> bytes(sizeof(h));
  std::memcpy(bytes.data(), &h, sizeof(h));
  return bytes;
}

std::vector<std::uint8_t> Frame(const std::vector<std::uint8_t>& header,
                                const std::vector<std::uint8_t>& payload) {
  return testing::MakeNetFrame(header, payload);
}

std::uint16_t NumBuffers(const std::vector<std::uint8_t>& frame) {
  return static_cast<std::uint16_t>(frame[10] | (frame[11] << 8));
}

// A net device behind the real MMIO transport, its tap replaced by a datagram socketpair,
// driven through guest-memory rings by the fake driver.
class NetDeviceTest : public DeviceHarness<NetDevice> {
 protected:
  NetDeviceTest()
      : DeviceHarness({.memory_size = kMemSize,
                       .queue_size = kQueueSize,
                       .queues = {0x1000, 0x4000},
                       .buffers = 0x10000}),
        net_(memory_, rx_, tx_, alloc_) {}

  NetConfig Config() {
    NetConfig config;
    config.iface_id = "eth0";
    config.host_dev_name = "faketap";
    config.guest_mac = MacAddress{0x06, 0, 0xac, 0x10, 0, 2};
    config.queue_size = kQueueSize;
    return config;
  }
  // A device of `config` on a new tap of `peer`.
  absl::StatusOr<std::unique_ptr<NetDevice>> Create(const NetConfig& config, FakeTapPeer& peer) {
    return NetDevice::CreateWithTap(config, peer.MakeTap(), metrics_, clock_);
  }

  void Start(std::uint64_t features = kMrgFeatures) { Start(Config(), features); }
  void Start(const NetConfig& config, std::uint64_t features) {
    StartDevice(Create(config, tap_), features);
  }

  FakeTapPeer tap_;
  FakeTapPeer tap2_;  // the tap of the VMM a snapshot is restored in
  FakeDriverQueue& rx_ = queue(kRxQueue);
  FakeDriverQueue& tx_ = queue(kTxQueue);
  FakeNetDriver net_;
};

TEST_F(NetDeviceTest, ConfigSpaceHoldsTheMacAndLinkUp) {
  Start();
  std::uint8_t config[10];
  for (std::size_t i = 0; i < sizeof(config); ++i) {
    config[i] = static_cast<std::uint8_t>(driver_->Read32(mmio::kConfig + i) & 0xff);
  }
  // Byte-wise reads via 32-bit accesses at unaligned offsets are not allowed for config
  // space on every transport; this one returns the bytes from the offset onward.
  EXPECT_EQ(std::vector<std::uint8_t>(config, config + 6),
            (std::vector<std::uint8_t>{0x06, 0, 0xac, 0x10, 0, 2}));
  EXPECT_EQ(config[6], 1);  // VIRTIO_NET_S_LINK_UP
  EXPECT_NE(driver_->DeviceFeatures() & FeatureBit(kFeatureMac), 0u);
}

TEST_F(NetDeviceTest, NoMacConfiguredMeansMacNotOffered) {
  NetConfig config = Config();
  config.guest_mac.reset();
  Start(config, kMrgFeatures);
  EXPECT_EQ(driver_->DeviceFeatures() & FeatureBit(kFeatureMac), 0u);
}

TEST_F(NetDeviceTest, ActivationSetsTapHeaderSizeAndOffloadsFromGuestFeatures) {
  Start(kBaseFeatures | FeatureBit(kFeatureGuestTso6));
  EXPECT_EQ(tap_.vnet_header_size(), 12);
  EXPECT_EQ(tap_.offloads(), kTunOffloadCsum | kTunOffloadTso4 | kTunOffloadTso6);
}

TEST_F(NetDeviceTest, NoGuestChecksumOffloadMeansNoTapOffloads) {
  Start(FeatureBit(kFeatureVersion1) | FeatureBit(kFeatureGuestTso4));
  EXPECT_EQ(tap_.offloads(), 0u);
}

TEST_F(NetDeviceTest, RefusedTapOffloadsFailActivation) {
  tap_.FailOffloads();
  ASSERT_NO_FATAL_FAILURE(AttachDevice(Create(Config(), tap_)));
  EXPECT_FALSE(driver_->Initialize(kBaseFeatures, QueueLayouts()).ok());
}

TEST_F(NetDeviceTest, RxFrameReachesTheGuestWithItsHeaderPassedThrough) {
  Start();
  net_.AddRxBuffers(4, 2048);
  Kick(kRxQueue);
  const auto header = Header(kHeaderFlagNeedsCsum, kGsoNone, 0, 34, 16);
  const auto payload = Payload(600);
  ASSERT_TRUE(tap_.Send(Frame(header, payload)));
  ServeUntilIdle();
  auto got = net_.PopRx();
  ASSERT_TRUE(got.has_value());
  ASSERT_EQ(got->size(), 12 + payload.size());
  EXPECT_EQ(NumBuffers(*got), 1);
  EXPECT_TRUE(std::equal(header.begin(), header.begin() + 10, got->begin()));
  EXPECT_TRUE(std::equal(payload.begin(), payload.end(), got->begin() + 12));
  EXPECT_EQ(Metric("rx_frames"), 1u);
  EXPECT_EQ(Metric("rx_bytes"), 600u);
}

TEST_F(NetDeviceTest, RxSignalsTheGuest) {
  Start();
  net_.AddRxBuffers(1, 2048);
  ASSERT_TRUE(tap_.Send(Frame(Header(), Payload(100))));
  ServeUntilIdle();
  EXPECT_NE(driver_->Read32(mmio::kInterruptStatus) & kInterruptUsedBuffer, 0u);
}

TEST_F(NetDeviceTest, RxWithoutBuffersKeepsTheFrameAndStopsWatchingTheTap) {
  Start();
  ASSERT_TRUE(tap_.Send(Frame(Header(), Payload(100, 1))));
  ASSERT_TRUE(tap_.Send(Frame(Header(), Payload(200, 2))));
  ServeUntilIdle();
  EXPECT_FALSE(device_->watching_tap());
  EXPECT_EQ(ServeEvents(), 0) << "the loop is woken although the guest has no buffers";
  EXPECT_EQ(Metric("rx_no_buffers"), 1u);
  EXPECT_EQ(Metric("rx_frames"), 0u);
}

TEST_F(NetDeviceTest, RxFramesWaitingForBuffersArriveInOrderOnceBuffersCome) {
  Start();
  for (std::uint8_t i = 0; i < 3; ++i) ASSERT_TRUE(tap_.Send(Frame(Header(), Payload(100 + i, i))));
  ServeUntilIdle();
  net_.AddRxBuffers(1, 2048);
  Kick(kRxQueue);
  ServeUntilIdle();
  net_.AddRxBuffers(4, 2048);
  Kick(kRxQueue);
  ServeUntilIdle();
  for (std::uint8_t i = 0; i < 3; ++i) {
    auto got = net_.PopRx();
    ASSERT_TRUE(got.has_value()) << "frame " << int{i} << " lost";
    EXPECT_EQ(got->size(), 12u + 100 + i);
    EXPECT_EQ((*got)[12], Payload(1, i)[0]);
  }
  EXPECT_FALSE(net_.PopRx().has_value());
  EXPECT_TRUE(device_->watching_tap());
  EXPECT_EQ(Metric("rx_frames"), 3u);
}

TEST_F(NetDeviceTest, RxBatchThatRunsOutOfBuffersMidwayKeepsTheRestInOrder) {
  Start();
  net_.AddRxBuffers(2, 2048);
  Kick(kRxQueue);
  for (std::uint8_t i = 0; i < 5; ++i) ASSERT_TRUE(tap_.Send(Frame(Header(), Payload(60 + i, i))));
  ServeUntilIdle();
  EXPECT_EQ(Metric("rx_frames"), 2u);
  EXPECT_EQ(Metric("rx_no_buffers"), 1u);
  EXPECT_FALSE(device_->watching_tap());
  net_.AddRxBuffers(3, 2048);
  Kick(kRxQueue);
  ServeUntilIdle();
  for (std::uint8_t i = 0; i < 5; ++i) {
    auto got = net_.PopRx();
    ASSERT_TRUE(got.has_value()) << "frame " << int{i} << " lost";
    ASSERT_EQ(got->size(), 12u + 60 + i) << "frame " << int{i} << " out of order";
    EXPECT_EQ(NumBuffers(*got), 1);
    EXPECT_EQ((*got)[12], Payload(1, i)[0]);
  }
  EXPECT_FALSE(net_.PopRx().has_value());
  EXPECT_EQ(Metric("rx_frames"), 5u);
  EXPECT_EQ(Metric("rx_bytes"), 60u + 61 + 62 + 63 + 64);
}

TEST_F(NetDeviceTest, MergeableRxSplitsALargeFrameAcrossBuffersAndCountsThem) {
  Start(kMrgFeatures);
  net_.AddRxBuffers(8, 1024);
  Kick(kRxQueue);
  const auto payload = Payload(3000);
  ASSERT_TRUE(tap_.Send(Frame(Header(), payload)));
  ServeUntilIdle();
  std::vector<std::uint8_t> joined;
  std::vector<std::vector<std::uint8_t>> parts;
  while (auto part = net_.PopRx()) parts.push_back(*part);
  ASSERT_EQ(parts.size(), 3u);  // 3012 bytes in 1024-byte buffers
  EXPECT_EQ(NumBuffers(parts[0]), 3);
  for (const auto& p : parts) joined.insert(joined.end(), p.begin(), p.end());
  ASSERT_EQ(joined.size(), 3012u);
  EXPECT_TRUE(std::equal(payload.begin(), payload.end(), joined.begin() + 12));
}

TEST_F(NetDeviceTest, MergeableRxWaitsUntilEnoughBuffersForTheWholeFrame) {
  Start(kMrgFeatures);
  net_.AddRxBuffers(2, 1024);
  Kick(kRxQueue);
  ASSERT_TRUE(tap_.Send(Frame(Header(), Payload(3000))));
  ServeUntilIdle();
  EXPECT_FALSE(net_.PopRx().has_value()) << "a partial frame was delivered";
  net_.AddRxBuffers(1, 1024);
  Kick(kRxQueue);
  ServeUntilIdle();
  int parts = 0;
  while (net_.PopRx()) ++parts;
  EXPECT_EQ(parts, 3);
}

TEST_F(NetDeviceTest, RxBufferSpreadOverSeveralDescriptorsHoldsOneFrame) {
  Start(kBaseFeatures);
  net_.AddRxBuffers(1, 4096, /*segments=*/4);
  const auto payload = Payload(3000);
  ASSERT_TRUE(tap_.Send(Frame(Header(), payload)));
  ServeUntilIdle();
  auto got = net_.PopRx();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->size(), 3012u);
  EXPECT_EQ(NumBuffers(*got), 1);
  EXPECT_TRUE(std::equal(payload.begin(), payload.end(), got->begin() + 12));
}

TEST_F(NetDeviceTest, WithoutMergeableBuffersAFrameTooLargeForTheBufferIsDroppedAndCounted) {
  Start(kBaseFeatures);
  net_.AddRxBuffers(1, 1024);
  ASSERT_TRUE(tap_.Send(Frame(Header(), Payload(3000))));
  ASSERT_TRUE(tap_.Send(Frame(Header(), Payload(500))));
  ServeUntilIdle();
  EXPECT_EQ(Metric("rx_frames_too_large"), 1u);
  auto got = net_.PopRx();  // the buffer was kept for the next frame
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->size(), 512u);
}

TEST_F(NetDeviceTest, RxFrameWaitingAcrossAResetReachesTheReinitialisedDriver) {
  Start();
  ASSERT_TRUE(tap_.Send(Frame(Header(), Payload(100))));
  ServeUntilIdle();
  FakeDriverQueue rx2(memory_, 0x7000, kQueueSize);
  FakeDriverQueue tx2(memory_, 0xa000, kQueueSize);
  FakeNetDriver net2(memory_, rx2, tx2, alloc_);
  net2.AddRxBuffers(1, 2048);
  ASSERT_TRUE(driver_->Initialize(kMrgFeatures, {rx2.layout(), tx2.layout()}).ok());
  ServeUntilIdle();
  auto got = net2.PopRx();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->size(), 112u);
}

TEST_F(NetDeviceTest, TxFrameReachesTheTapWithItsHeader) {
  Start();
  const auto header = Header(kHeaderFlagNeedsCsum, kGsoNone, 0, 34, 16);
  const auto frame = Frame(header, Payload(1400));
  net_.AddTx(frame, /*segments=*/3);
  Kick(kTxQueue);
  auto got = tap_.Receive();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, frame);
  auto used = tx_.PopUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 0u);
  EXPECT_EQ(Metric("tx_frames"), 1u);
  EXPECT_EQ(Metric("tx_bytes"), 1400u);
}

TEST_F(NetDeviceTest, TxGsoFrameNegotiatedIsForwarded) {
  Start();
  net_.AddTx(Frame(Header(kHeaderFlagNeedsCsum, kGsoTcpV4, 1448, 34, 16), Payload(5000)));
  Kick(kTxQueue);
  EXPECT_TRUE(tap_.Receive().has_value());
  EXPECT_EQ(Metric("tx_malformed_frames"), 0u);
}

// Each malformed TX frame is dropped, counted, and its chain returned; the next good frame
// still goes out.
class NetTxMalformedTest : public NetDeviceTest {
 protected:
  void ExpectDropped() {
    net_.AddTx(Frame(Header(), Payload(64)));
    Kick(kTxQueue);
    auto first = tap_.Receive();
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(first->size(), 76u) << "the malformed frame reached the tap";
    EXPECT_FALSE(tap_.Receive().has_value());
    EXPECT_EQ(Metric("tx_malformed_frames"), 1u);
    EXPECT_EQ(Metric("tx_frames"), 1u);
    int used = 0;
    while (tx_.PopUsed()) ++used;
    EXPECT_EQ(used, 2);
    EXPECT_FALSE(NeedsReset());
  }
};

TEST_F(NetTxMalformedTest, FrameLargerThanTheMaximumIsDropped) {
  Start();
  net_.AddTx(Frame(Header(), Payload(kMaxFrameBytes)), 4);
  ExpectDropped();
}

TEST_F(NetTxMalformedTest, HeaderOnlyFrameIsDropped) {
  Start();
  net_.AddTx(Header());
  ExpectDropped();
}

TEST_F(NetTxMalformedTest, ShorterThanTheHeaderIsDropped) {
  Start();
  net_.AddTx(Payload(6));
  ExpectDropped();
}

TEST_F(NetTxMalformedTest, DeviceWritableBufferIsDropped) {
  Start();
  const auto frame = Frame(Header(), Payload(100));
  const std::uint32_t lengths[] = {12, 100};
  const bool writable[] = {false, true};
  net_.AddTxRaw(frame, lengths, writable);
  ExpectDropped();
}

TEST_F(NetTxMalformedTest, UnknownGsoTypeIsDropped) {
  Start();
  net_.AddTx(Frame(Header(kHeaderFlagNeedsCsum, 2, 1448, 34, 16), Payload(100)));
  ExpectDropped();
}

TEST_F(NetTxMalformedTest, GsoTypeNotNegotiatedIsDropped) {
  Start();  // no HOST_TSO6
  net_.AddTx(Frame(Header(kHeaderFlagNeedsCsum, kGsoTcpV6, 1448, 54, 16), Payload(3000)));
  ExpectDropped();
}

TEST_F(NetTxMalformedTest, ChecksumOutsideTheFrameIsDropped) {
  Start();
  net_.AddTx(Frame(Header(kHeaderFlagNeedsCsum, kGsoNone, 0, 90, 16), Payload(100)));
  ExpectDropped();
}

TEST_F(NetTxMalformedTest, DataValidFlagOnTxIsDropped) {
  Start();
  net_.AddTx(Frame(Header(kHeaderFlagDataValid), Payload(100)));
  ExpectDropped();
}

TEST_F(NetDeviceTest, TxBatchWithOneMalformedChainSendsTheOthersInOrder) {
  Start();
  net_.AddTx(Frame(Header(), Payload(64, 1)));
  net_.AddTx(Header());  // header only: dropped
  net_.AddTx(Frame(Header(), Payload(65, 2)));
  Kick(kTxQueue);
  auto first = tap_.Receive();
  auto second = tap_.Receive();
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(*first, Frame(Header(), Payload(64, 1)));
  EXPECT_EQ(*second, Frame(Header(), Payload(65, 2)));
  EXPECT_FALSE(tap_.Receive().has_value());
  EXPECT_EQ(Metric("tx_malformed_frames"), 1u);
  EXPECT_EQ(Metric("tx_frames"), 2u);
  EXPECT_EQ(Metric("tx_bytes"), 64u + 65);
  int used = 0;
  while (tx_.PopUsed()) ++used;
  EXPECT_EQ(used, 3);
  EXPECT_FALSE(NeedsReset());
}

TEST_F(NetDeviceTest, HostileTxChainMarksTheDeviceNeedsResetAndIsCounted) {
  Start();
  tx_.WriteDescriptor(0, kMemSize - 8, 64, 0, 0);  // runs past the end of guest memory
  tx_.Publish(0);
  Kick(kTxQueue);
  EXPECT_TRUE(NeedsReset());
  EXPECT_EQ(Metric("invalid_chains"), 1u);
  EXPECT_FALSE(tap_.Receive().has_value());
}

TEST_F(NetDeviceTest, HostileRxChainMarksTheDeviceNeedsResetAndStopsReadingTheTap) {
  Start();
  rx_.WriteDescriptor(0, 0x20000, 256, kDescFlagNext | kDescFlagWrite, 0);  // loops to itself
  rx_.Publish(0);
  ASSERT_TRUE(tap_.Send(Frame(Header(), Payload(100))));
  ServeUntilIdle();
  EXPECT_TRUE(NeedsReset());
  EXPECT_EQ(Metric("invalid_chains"), 1u);
  EXPECT_FALSE(device_->watching_tap());
}

TEST_F(NetDeviceTest, RxChainWithDeviceReadableBuffersIsADriverError) {
  Start();
  const testing::FakeBuffer readable[] = {{0x20000, 2048, false}};
  rx_.AddChain(readable);
  ASSERT_TRUE(tap_.Send(Frame(Header(), Payload(100))));
  ServeUntilIdle();
  EXPECT_TRUE(NeedsReset());
}

TEST_F(NetDeviceTest, TxRateLimiterThrottlesAndTheTimerResumes) {
  NetConfig config = Config();
  config.tx_rate_limiter.ops = {1, 0, 1000};  // one frame per second
  Start(config, kMrgFeatures);
  net_.AddTx(Frame(Header(), Payload(64)));
  net_.AddTx(Frame(Header(), Payload(64)));
  Kick(kTxQueue);
  EXPECT_TRUE(tap_.Receive().has_value());
  EXPECT_FALSE(tap_.Receive().has_value());
  EXPECT_EQ(Metric("tx_rate_limiter_throttled"), 1u);
  clock_.AdvanceMs(1000);
  // The limiter's timerfd runs on the real clock; wait for it like the VMM loop would.
  for (int i = 0; i < 300 && !tap_.Receive().has_value(); ++i) {
    ServeEvents(/*timeout_ms=*/10);
    if (Metric("tx_frames") == 2) break;
  }
  EXPECT_EQ(Metric("tx_frames"), 2u);
}

TEST_F(NetDeviceTest, RxRateLimiterDefersTheFrameWithoutLosingIt) {
  NetConfig config = Config();
  config.rx_rate_limiter.ops = {1, 0, 1000};
  Start(config, kMrgFeatures);
  net_.AddRxBuffers(4, 2048);
  ASSERT_TRUE(tap_.Send(Frame(Header(), Payload(64))));
  ASSERT_TRUE(tap_.Send(Frame(Header(), Payload(65))));
  ServeUntilIdle();
  EXPECT_EQ(Metric("rx_frames"), 1u);
  EXPECT_FALSE(device_->watching_tap());
  clock_.AdvanceMs(1000);
  for (int i = 0; i < 300 && Metric("rx_frames") < 2; ++i) ServeEvents(/*timeout_ms=*/10);
  EXPECT_EQ(Metric("rx_frames"), 2u);
  // The held-back frame arrives intact once the limiter lets it through.
  auto first = net_.PopRx();
  auto second = net_.PopRx();
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE(second.has_value());
  const auto payload = Payload(65);
  ASSERT_EQ(second->size(), 12u + payload.size());
  EXPECT_TRUE(std::equal(payload.begin(), payload.end(), second->begin() + 12));
  EXPECT_EQ(NumBuffers(*second), 1);
}

TEST_F(NetDeviceTest, SnapshotRestoreResumesBothQueuesWhereTheyStood) {
  Start();
  net_.AddRxBuffers(4, 2048);
  ASSERT_TRUE(tap_.Send(Frame(Header(), Payload(100, 1))));
  ServeUntilIdle();
  ASSERT_TRUE(net_.PopRx().has_value());
  net_.AddTx(Frame(Header(), Payload(64)));
  Kick(kTxQueue);
  ASSERT_TRUE(tap_.Receive().has_value());
  ASSERT_TRUE(tx_.PopUsed().has_value());

  auto saved = transport_->SaveState();
  ASSERT_TRUE(saved.ok()) << saved.status();
  // The old VMM goes away with its tap; the new one has a tap of its own.
  const absl::Status restored = RestoreDevice(*saved, [&] { return Create(Config(), tap2_); });
  ASSERT_TRUE(restored.ok()) << restored;
  EXPECT_EQ(tap2_.vnet_header_size(), 12);
  EXPECT_EQ(tap2_.offloads(), kTunOffloadCsum | kTunOffloadTso4);

  ASSERT_TRUE(tap2_.Send(Frame(Header(), Payload(200, 2))));
  ServeUntilIdle();
  auto got = net_.PopRx();  // one of the three buffers posted before the snapshot
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->size(), 212u);
  net_.AddTx(Frame(Header(), Payload(65)));
  Kick(kTxQueue);
  auto sent = tap2_.Receive();
  ASSERT_TRUE(sent.has_value());
  EXPECT_EQ(sent->size(), 77u);
}

}  // namespace
}  // namespace ember::virtio::net
