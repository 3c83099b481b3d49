#include "virtio/block/block_device.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <numeric>
#include <optional>
#include <thread>
#include <vector>

#include "tests/unit/virtio/device_harness.h"
#include "virtio/mmio/mmio_transport.h"
#include "virtio/mmio/registers.h"
#include "virtio/spec.h"
#include "virtio/testing/fake_block_driver.h"
#include "virtio/testing/fake_driver_queue.h"
#include "vmm/base/event_loop.h"

namespace ember::virtio::block {
namespace {

using testing::BlockRequestBuffers;
using testing::DeviceHarness;
using testing::FakeBlockDriver;
using testing::FakeBuffer;
using testing::FakeDriverQueue;
using testing::FakeMmioDriver;

constexpr std::uint64_t kMemSize = 4 << 20;
constexpr std::uint64_t kDiskSize = 64 * 1024;
constexpr std::uint16_t kQueueSize = 256;
constexpr std::uint64_t kDriverFeatures =
    FeatureBit(kFeatureVersion1) | FeatureBit(kFeatureIndirectDesc) | FeatureBit(kFeatureEventIdx);

// Byte i of the disk image holds PatternByte(i), so any read can be checked.
std::uint8_t PatternByte(std::uint64_t offset) {
  return static_cast<std::uint8_t>((offset * 7 + offset / 512) & 0xff);
}

std::vector<std::uint8_t> Pattern(std::uint64_t offset, std::uint64_t len) {
  std::vector<std::uint8_t> bytes(len);
  for (std::uint64_t i = 0; i < len; ++i) bytes[i] = PatternByte(offset + i);
  return bytes;
}

// A disk image file in the test's temporary directory, removed afterwards.
class TempDisk {
 public:
  explicit TempDisk(std::uint64_t size) {
    path_ = ::testing::TempDir() + "/ember_blk_XXXXXX";
    int fd = ::mkstemp(path_.data());
    EXPECT_GE(fd, 0);
    std::vector<std::uint8_t> bytes = Pattern(0, size);
    EXPECT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(size));
    ::close(fd);
  }
  ~TempDisk() { ::unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

  std::vector<std::uint8_t> Read(std::uint64_t offset, std::uint64_t len) const {
    std::vector<std::uint8_t> bytes(len);
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_EQ(::pread(fd, bytes.data(), len, static_cast<off_t>(offset)),
              static_cast<ssize_t>(len));
    ::close(fd);
    return bytes;
  }

 private:
  std::string path_;
};

// An engine whose operations finish only when the test releases them: a hung host disk.
class HeldEngine final : public BlockEngine {
 public:
  void Read(std::uint64_t, const IoVecs&, std::uint64_t cookie) override { Hold(cookie); }
  void Write(std::uint64_t, const IoVecs&, std::uint64_t cookie) override { Hold(cookie); }
  void Flush(std::uint64_t cookie) override { Hold(cookie); }
  void WriteZeroes(std::uint64_t, std::uint64_t, bool, std::uint64_t cookie) override {
    Hold(cookie);
  }
  void Submit() override {}
  void Reap(std::vector<Completion>* out) override {
    std::lock_guard lock(mu_);
    out->insert(out->end(), done_.begin(), done_.end());
    done_.clear();
  }
  absl::Status WaitForCompletion(std::chrono::nanoseconds timeout) override {
    {
      std::lock_guard lock(mu_);
      if (!done_.empty()) return absl::OkStatus();
    }
    std::this_thread::sleep_for(timeout);
    return absl::DeadlineExceededError("held");
  }
  absl::Status ReplaceFile(int) override {
    ++replaced_;
    return absl::OkStatus();
  }
  int completion_fd() const override { return -1; }
  int replaced() const { return replaced_; }

  // Finishes every operation held so far, each with an I/O error.
  void Release() {
    std::lock_guard lock(mu_);
    for (std::uint64_t cookie : held_) done_.push_back({cookie, -EIO});
    held_.clear();
  }
  int held() {
    std::lock_guard lock(mu_);
    return static_cast<int>(held_.size());
  }

 private:
  void Hold(std::uint64_t cookie) {
    std::lock_guard lock(mu_);
    held_.push_back(cookie);
  }

  std::mutex mu_;  // the test releases from its thread while a reset reaps on another
  int replaced_ = 0;  // test thread only
  std::vector<std::uint64_t> held_;
  std::vector<Completion> done_;
};

// A block device behind the real MMIO transport, driven through guest-memory rings by the
// fake driver, on the engine the test is instantiated with.
class BlockDeviceTest : public DeviceHarness<BlockDevice, ::testing::TestWithParam<EngineKind>> {
 protected:
  BlockDeviceTest()
      : DeviceHarness({.memory_size = kMemSize,
                       .queue_size = kQueueSize,
                       .queues = {0x1000},
                       .buffers = 0x10000}),
        disk_(kDiskSize),
        blk_(memory_, queue_, alloc_) {}

  BlockConfig Config() {
    BlockConfig config;
    config.drive_id = "disk0";
    config.path = disk_.path();
    config.engine = GetParam();
    config.cache = CacheMode::kWriteback;
    return config;
  }

  // Creates the device and runs the driver's probe; fails the test if either fails.
  void Start(const BlockConfig& config) { Start(BlockDevice::Create(config, metrics_, clock_)); }
  void Start() { Start(Config()); }
  void Start(absl::StatusOr<std::unique_ptr<BlockDevice>> device) {
    ASSERT_NO_FATAL_FAILURE(AttachDevice(std::move(device)));
    Probe(kDriverFeatures & driver_->DeviceFeatures());
  }

  // Starts the device on HeldEngine (held_), giving up on requests in flight after 50 ms.
  void StartOnHungDisk() {
    BlockConfig config = Config();
    config.in_flight_wait_limit = std::chrono::milliseconds(50);
    Start(BlockDevice::CreateWithEngine(
        config,
        [this](int) -> absl::StatusOr<std::unique_ptr<BlockEngine>> {
          auto engine = std::make_unique<HeldEngine>();
          held_ = engine.get();
          return engine;
        },
        metrics_, clock_));
  }

  // A restore in a new VMM process (DeviceHarness::RestoreDevice) onto a drive of `config`.
  absl::Status Restore(const VirtioDeviceSnapshot& state, const BlockConfig& config) {
    return RestoreDevice(state, [&] { return BlockDevice::Create(config, metrics_, clock_); });
  }

  // Starts the device on a bigger disk read with O_DIRECT (slow_config_), so that reads
  // really wait for the host's disk and stay in flight in io_uring after Submit. Returns why
  // a test needing that must skip (the file system refuses O_DIRECT), empty once started.
  std::string StartOnSlowDisk() {
    slow_disk_.emplace(4 << 20);
    BlockConfig config = Config();
    config.path = slow_disk_->path();
    config.direct_io = true;
    if (!BlockDevice::Create(config, metrics_, clock_).ok()) {
      return "the temporary directory's file system refuses O_DIRECT";
    }
    slow_config_ = config;
    Start(config);
    return "";
  }

  // One request, start to finish: returns its status byte.
  std::uint8_t Run(const BlockRequestBuffers& buffers) {
    Kick();
    auto used = WaitForUsed(1);
    EXPECT_EQ(used.size(), 1u);
    return blk_.Status(buffers);
  }

  // A discard or write-zeroes request carrying one segment.
  BlockRequestBuffers AddSegmentRequest(std::uint32_t type, const DiscardSegment& segment) {
    BlockRequestBuffers req = blk_.Allocate(sizeof(DiscardSegment));
    // DiscardSegment is the wire format, little-endian like the host.
    blk_.WriteData(req, std::span(reinterpret_cast<const std::uint8_t*>(&segment),
                                  sizeof(segment)));
    blk_.Add(req, type, 0);
    return req;
  }

  TempDisk disk_;
  std::optional<TempDisk> slow_disk_;  // StartOnSlowDisk's
  BlockConfig slow_config_;            // StartOnSlowDisk's
  FakeDriverQueue& queue_ = queue(0);
  FakeBlockDriver blk_;
  HeldEngine* held_ = nullptr;  // StartOnHungDisk's, owned by the device
};

// Requests still in flight when the test acts: see the instantiation at the end.
class InFlightBlockDeviceTest : public BlockDeviceTest {};
// Requests that never finish on their own (HeldEngine), whatever engine the config names.
class HungDiskBlockDeviceTest : public BlockDeviceTest {};

TEST_P(BlockDeviceTest, ReadReturnsTheFileContents) {
  Start();
  BlockRequestBuffers req = blk_.AddNew(kTypeIn, 3, 4096);
  EXPECT_EQ(Run(req), kStatusOk);
  EXPECT_EQ(blk_.ReadData(req), Pattern(3 * 512, 4096));
  EXPECT_EQ(Metric("read_count"), 1u);
  EXPECT_EQ(Metric("read_bytes"), 4096u);
}

TEST_P(BlockDeviceTest, ReadReportsDataPlusStatusAsUsedLength) {
  Start();
  blk_.AddNew(kTypeIn, 0, 1024);
  Kick();
  auto used = WaitForUsed(1);
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 1025u);
}

TEST_P(BlockDeviceTest, ReadScatteredOverSeveralDescriptors) {
  Start();
  BlockRequestBuffers req = blk_.AddNew(kTypeIn, 8, 3 * 512, /*segments=*/3);
  EXPECT_EQ(Run(req), kStatusOk);
  EXPECT_EQ(blk_.ReadData(req), Pattern(8 * 512, 3 * 512));
}

// The layouts below take ParseRequest's general paths rather than its fast ones.
TEST_P(BlockDeviceTest, ReadWithTheHeaderSplitAcrossTwoDescriptors) {
  Start();
  // Two separate 8-byte halves (type + reserved, then sector), with a gap of other bytes
  // between them.
  const base::GuestAddress first = alloc_.Alloc(16);
  const base::GuestAddress second = alloc_.Alloc(16);
  ASSERT_TRUE(memory_.WriteObj(first, std::array<std::uint32_t, 4>{kTypeIn, 0, 7, 7}).ok());
  ASSERT_TRUE(memory_.WriteObj(second, std::uint64_t{2}).ok());
  const base::GuestAddress data = alloc_.Alloc(512, 512);
  const base::GuestAddress status = alloc_.Alloc(1, 1);
  const FakeBuffer chain[] = {
      {first, 8, false}, {second, 8, false}, {data, 512, true}, {status, 1, true}};
  queue_.AddChain(chain);
  Kick();
  ASSERT_EQ(WaitForUsed(1).size(), 1u);
  EXPECT_EQ(memory_.ReadObj<std::uint8_t>(status).value(), kStatusOk);
  std::vector<std::uint8_t> read(512);
  ASSERT_TRUE(memory_.Read(data, read).ok());
  EXPECT_EQ(read, Pattern(2 * 512, 512));
}

TEST_P(BlockDeviceTest, StatusByteBeforeAnEmptyLastDescriptorIsAnswered) {
  Start();
  BlockRequestBuffers req = blk_.Allocate(512);
  struct {
    std::uint32_t type;
    std::uint32_t reserved;
    std::uint64_t sector;
  } fields{kTypeIn, 0, 1};
  ASSERT_TRUE(memory_.WriteObj(req.header, fields).ok());
  ASSERT_TRUE(memory_.WriteObj<std::uint8_t>(req.status, 0xff).ok());
  // The empty descriptor points at the data, so taking its "last byte" would miss the
  // status byte.
  const FakeBuffer chain[] = {{req.header, 16, false},
                              {req.data, 512, true},
                              {req.status, 1, true},
                              {req.data + 8, 0, true}};
  queue_.AddChain(chain);
  Kick();
  auto used = WaitForUsed(1);
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 513u);
  EXPECT_EQ(blk_.Status(req), kStatusOk);
  EXPECT_EQ(blk_.ReadData(req), Pattern(512, 512));
}

TEST_P(BlockDeviceTest, ReadThroughAnIndirectTable) {
  Start();
  BlockRequestBuffers req = blk_.AddNew(kTypeIn, 1, 2048, /*segments=*/4, /*indirect=*/true);
  EXPECT_EQ(Run(req), kStatusOk);
  EXPECT_EQ(blk_.ReadData(req), Pattern(512, 2048));
}

TEST_P(BlockDeviceTest, WriteReachesTheFile) {
  Start();
  BlockRequestBuffers req = blk_.Allocate(1024);
  std::vector<std::uint8_t> data(1024, 0x5a);
  blk_.WriteData(req, data);
  blk_.Add(req, kTypeOut, 10);
  EXPECT_EQ(Run(req), kStatusOk);
  EXPECT_EQ(disk_.Read(10 * 512, 1024), data);
  EXPECT_EQ(disk_.Read(9 * 512, 512), Pattern(9 * 512, 512));
  EXPECT_EQ(Metric("write_bytes"), 1024u);
}

TEST_P(BlockDeviceTest, DirectIoReadsAndWritesBypassingThePageCache) {
  BlockConfig config = Config();
  config.direct_io = true;
  if (auto probe = BlockDevice::Create(config, metrics_, clock_);
      !probe.ok() && absl::IsInvalidArgument(probe.status())) {
    GTEST_SKIP() << "the temporary directory's file system refuses O_DIRECT";
  }
  Start(config);
  BlockRequestBuffers write = blk_.Allocate(4096);
  std::vector<std::uint8_t> data(4096, 0xc3);
  blk_.WriteData(write, data);
  blk_.Add(write, kTypeOut, 8);
  EXPECT_EQ(Run(write), kStatusOk);
  BlockRequestBuffers read = blk_.AddNew(kTypeIn, 8, 4096);
  EXPECT_EQ(Run(read), kStatusOk);
  EXPECT_EQ(blk_.ReadData(read), data);
}

TEST_P(BlockDeviceTest, ReadPastTheEndFailsWithIoErr) {
  Start();
  BlockRequestBuffers req = blk_.AddNew(kTypeIn, kDiskSize / 512, 512);
  EXPECT_EQ(Run(req), kStatusIoErr);
  EXPECT_EQ(Metric("invalid_requests"), 1u);
}

TEST_P(BlockDeviceTest, ReadStraddlingTheEndFailsWithIoErr) {
  Start();
  BlockRequestBuffers req = blk_.AddNew(kTypeIn, kDiskSize / 512 - 1, 1024);
  EXPECT_EQ(Run(req), kStatusIoErr);
}

TEST_P(BlockDeviceTest, ReadAtAHugeSectorDoesNotWrapAround) {
  Start();
  BlockRequestBuffers req = blk_.AddNew(kTypeIn, ~std::uint64_t{0} / 512 + 1, 512);
  EXPECT_EQ(Run(req), kStatusIoErr);
}

TEST_P(BlockDeviceTest, ReadOfPartialSectorFailsWithIoErr) {
  Start();
  BlockRequestBuffers req = blk_.AddNew(kTypeIn, 0, 100);
  EXPECT_EQ(Run(req), kStatusIoErr);
}

TEST_P(BlockDeviceTest, WriteToReadOnlyDriveFailsWithIoErr) {
  BlockConfig config = Config();
  config.read_only = true;
  Start(config);
  BlockRequestBuffers req = blk_.AddNew(kTypeOut, 0, 512);
  EXPECT_EQ(Run(req), kStatusIoErr);
  EXPECT_EQ(disk_.Read(0, 512), Pattern(0, 512));
}

TEST_P(BlockDeviceTest, ReadFromReadOnlyDriveWorks) {
  BlockConfig config = Config();
  config.read_only = true;
  Start(config);
  BlockRequestBuffers req = blk_.AddNew(kTypeIn, 2, 512);
  EXPECT_EQ(Run(req), kStatusOk);
  EXPECT_EQ(blk_.ReadData(req), Pattern(1024, 512));
}

TEST_P(BlockDeviceTest, ReadBeyondAShrunkenBackingFileFailsWithIoErr) {
  Start();
  ASSERT_EQ(::truncate(disk_.path().c_str(), kDiskSize / 2), 0);
  BlockRequestBuffers req = blk_.AddNew(kTypeIn, kDiskSize / 512 - 2, 1024);
  EXPECT_EQ(Run(req), kStatusIoErr);
  EXPECT_EQ(Metric("io_errors"), 1u);
}

TEST_P(BlockDeviceTest, IoErrorFailsOnlyThatRequest) {
  Start();
  ASSERT_EQ(::truncate(disk_.path().c_str(), kDiskSize / 2), 0);
  BlockRequestBuffers bad = blk_.AddNew(kTypeIn, kDiskSize / 512 - 1, 512);
  BlockRequestBuffers good = blk_.AddNew(kTypeIn, 0, 512);
  Kick();
  EXPECT_EQ(WaitForUsed(2).size(), 2u);
  EXPECT_EQ(blk_.Status(bad), kStatusIoErr);
  EXPECT_EQ(blk_.Status(good), kStatusOk);
}

TEST_P(BlockDeviceTest, FlushSucceeds) {
  Start();
  BlockRequestBuffers req = blk_.AddNew(kTypeFlush, 0, 0);
  EXPECT_EQ(Run(req), kStatusOk);
  EXPECT_EQ(Metric("flush_count"), 1u);
}

TEST_P(BlockDeviceTest, GetIdReturnsTheDriveId) {
  Start();
  BlockRequestBuffers req = blk_.AddNew(kTypeGetId, 0, kIdBytes);
  EXPECT_EQ(Run(req), kStatusOk);
  std::vector<std::uint8_t> expected(kIdBytes, 0);
  std::memcpy(expected.data(), "disk0", 5);
  EXPECT_EQ(blk_.ReadData(req), expected);
}

TEST_P(BlockDeviceTest, DiscardMakesTheRangeReadAsZeros) {
  Start();
  BlockRequestBuffers req = AddSegmentRequest(kTypeDiscard, {4, 8, 0});
  EXPECT_EQ(Run(req), kStatusOk);
  EXPECT_EQ(disk_.Read(4 * 512, 8 * 512), std::vector<std::uint8_t>(8 * 512, 0));
  EXPECT_EQ(disk_.Read(12 * 512, 512), Pattern(12 * 512, 512));
  EXPECT_EQ(Metric("discard_count"), 1u);
}

TEST_P(BlockDeviceTest, WriteZeroesZeroesTheRange) {
  Start();
  BlockRequestBuffers req = AddSegmentRequest(kTypeWriteZeroes, {2, 3, kWriteZeroesFlagUnmap});
  EXPECT_EQ(Run(req), kStatusOk);
  EXPECT_EQ(disk_.Read(2 * 512, 3 * 512), std::vector<std::uint8_t>(3 * 512, 0));
  EXPECT_EQ(disk_.Read(5 * 512, 512), Pattern(5 * 512, 512));
}

TEST_P(BlockDeviceTest, DiscardWithUnknownFlagsIsUnsupported) {
  Start();
  BlockRequestBuffers req = AddSegmentRequest(kTypeDiscard, {0, 1, kWriteZeroesFlagUnmap});
  EXPECT_EQ(Run(req), kStatusUnsupp);
  EXPECT_EQ(disk_.Read(0, 512), Pattern(0, 512));
}

TEST_P(BlockDeviceTest, DiscardPastTheEndFailsWithIoErr) {
  Start();
  BlockRequestBuffers req = AddSegmentRequest(kTypeDiscard, {kDiskSize / 512 - 1, 2, 0});
  EXPECT_EQ(Run(req), kStatusIoErr);
}

TEST_P(BlockDeviceTest, UnknownRequestTypeIsUnsupported) {
  Start();
  BlockRequestBuffers req = blk_.AddNew(/*type=*/99, 0, 0);
  EXPECT_EQ(Run(req), kStatusUnsupp);
}

TEST_P(BlockDeviceTest, ManyRequestsFromOneNotificationAllComplete) {
  Start();
  std::vector<BlockRequestBuffers> reqs;
  for (std::uint64_t i = 0; i < 64; ++i) reqs.push_back(blk_.AddNew(kTypeIn, i, 512));
  Kick();
  EXPECT_EQ(WaitForUsed(64).size(), 64u);
  for (std::uint64_t i = 0; i < 64; ++i) {
    EXPECT_EQ(blk_.Status(reqs[i]), kStatusOk);
    EXPECT_EQ(blk_.ReadData(reqs[i]), Pattern(i * 512, 512));
  }
}

// The io_uring engine's submission queue holds 64 entries; a bigger batch goes in pieces.
TEST_P(BlockDeviceTest, MoreRequestsThanOneSubmissionBatchAllComplete) {
  Start();
  constexpr std::uint64_t kRequests = 80;  // three descriptors each: 240 of 256
  std::vector<BlockRequestBuffers> reqs;
  for (std::uint64_t i = 0; i < kRequests; ++i) reqs.push_back(blk_.AddNew(kTypeIn, i, 512));
  Kick();
  EXPECT_EQ(WaitForUsed(kRequests).size(), kRequests);
  for (std::uint64_t i = 0; i < kRequests; ++i) {
    EXPECT_EQ(blk_.Status(reqs[i]), kStatusOk);
    EXPECT_EQ(blk_.ReadData(reqs[i]), Pattern(i * 512, 512));
  }
}

TEST_P(BlockDeviceTest, CompletionRaisesTheUsedBufferInterrupt) {
  Start();
  BlockRequestBuffers req = blk_.AddNew(kTypeIn, 0, 512);
  Run(req);
  EXPECT_EQ(driver_->Read32(mmio::kInterruptStatus) & kInterruptUsedBuffer,
            kInterruptUsedBuffer);
  EXPECT_GE(transport_->irqfd().Consume(), 1u);
}

TEST_P(BlockDeviceTest, EdgeTriggeredLoopSeesEveryCompletionWithoutDrainingTheFd) {
  if (std::string why = StartOnSlowDisk(); !why.empty()) GTEST_SKIP() << why;
  // Watched as VirtioDevices::Add watches them in ember-vmm's loop.
  auto loop = base::EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  for (EventSource& source : device_->EventSources()) {
    ASSERT_TRUE(loop->Add(source.fd, EPOLLIN | (source.edge_triggered ? EPOLLET : 0u),
                          [on_readable = std::move(source.on_readable)](std::uint32_t) {
                            on_readable();
                          })
                    .ok());
  }
  constexpr std::uint32_t kLen = 64 * 1024;
  for (std::uint16_t round = 1; round <= 3; ++round) {
    BlockRequestBuffers req = blk_.AddNew(kTypeIn, std::uint64_t{round} * kLen / 512, kLen);
    Kick();
    for (int i = 0; i < 500 && queue_.UsedIdx() != round; ++i) {
      ASSERT_TRUE(loop->RunOnce(10).ok());
    }
    ASSERT_EQ(queue_.UsedIdx(), round) << "the loop missed a completion";
    EXPECT_EQ(blk_.Status(req), kStatusOk);
  }
}

TEST_P(BlockDeviceTest, EventIdxPublishesAvailEventAfterDraining) {
  Start();
  blk_.AddNew(kTypeIn, 0, 512);
  blk_.AddNew(kTypeIn, 1, 512);
  Kick();
  WaitForUsed(2);
  EXPECT_EQ(queue_.AvailEvent(), 2);
}

TEST_P(BlockDeviceTest, ChainWithoutStatusByteMarksNeedsReset) {
  Start();
  const FakeBuffer header{alloc_.Alloc(16), 16, false};
  queue_.AddChain(std::span(&header, 1));
  Kick();
  EXPECT_NE(driver_->Read32(mmio::kStatus) & kStatusNeedsReset, 0u);
  EXPECT_EQ(Metric("invalid_chains"), 1u);
}

TEST_P(BlockDeviceTest, HostileDescriptorMarksNeedsResetAndStopsTheDevice) {
  Start();
  queue_.WriteDescriptor(0, kMemSize - 8, 4096, 0, 0);
  queue_.Publish(0);
  Kick();
  EXPECT_NE(driver_->Read32(mmio::kStatus) & kStatusNeedsReset, 0u);
  EXPECT_EQ(Metric("invalid_chains"), 1u);
  EXPECT_EQ(driver_->Read32(mmio::kInterruptStatus) & kInterruptConfigChange,
            kInterruptConfigChange);
  // Until the driver resets, nothing more is processed.
  blk_.AddNew(kTypeIn, 0, 512);
  Kick();
  EXPECT_EQ(queue_.UsedIdx(), 0);
}

TEST_P(BlockDeviceTest, DeviceWorksAgainAfterResetFollowingNeedsReset) {
  Start();
  queue_.WriteDescriptor(0, kMemSize - 8, 4096, 0, 0);
  queue_.Publish(0);
  Kick();
  FakeDriverQueue fresh(memory_, 0x8000, kQueueSize);
  FakeBlockDriver blk(memory_, fresh, alloc_);
  ASSERT_TRUE(driver_->Initialize(kDriverFeatures, {fresh.layout()}).ok());
  BlockRequestBuffers req = blk.AddNew(kTypeIn, 0, 512);
  Kick();
  ASSERT_EQ(WaitForUsed(1, fresh).size(), 1u);
  EXPECT_EQ(blk.Status(req), kStatusOk);
}

TEST_P(BlockDeviceTest, RateLimitedRequestWaitsForTheTimer) {
  BlockConfig config = Config();
  config.rate_limiter.ops = {1, 0, 1000};
  Start(config);
  BlockRequestBuffers first = blk_.AddNew(kTypeIn, 0, 512);
  BlockRequestBuffers second = blk_.AddNew(kTypeIn, 1, 512);
  Kick();
  EXPECT_EQ(WaitForUsed(1).size(), 1u);
  EXPECT_FALSE(queue_.PopUsed().has_value());
  EXPECT_EQ(blk_.Status(first), kStatusOk);
  EXPECT_EQ(blk_.Status(second), 0xff);
  EXPECT_EQ(Metric("rate_limiter_throttled"), 1u);

  clock_.AdvanceMs(1000);
  device_->ProcessRateLimiterTimer();

  EXPECT_EQ(WaitForUsed(1).size(), 1u);
  EXPECT_EQ(blk_.Status(second), kStatusOk);
}

TEST_P(BlockDeviceTest, ConfigSpaceDescribesTheDisk) {
  Start();
  auto read64 = [&](std::uint64_t off) {
    return driver_->Read32(mmio::kConfig + off) |
           (std::uint64_t{driver_->Read32(mmio::kConfig + off + 4)} << 32);
  };
  EXPECT_EQ(read64(0), kDiskSize / 512);                          // capacity
  EXPECT_EQ(driver_->Read32(mmio::kConfig + 12), kQueueSize - 2u);  // seg_max
  EXPECT_EQ(driver_->Read32(mmio::kConfig + 20), 512u);             // blk_size
}

TEST_P(BlockDeviceTest, ReadOnlyDriveOffersRoAndNoDiscard) {
  BlockConfig config = Config();
  config.read_only = true;
  Start(config);
  const std::uint64_t features = driver_->DeviceFeatures();
  EXPECT_NE(features & FeatureBit(5), 0u);   // VIRTIO_BLK_F_RO
  EXPECT_EQ(features & FeatureBit(13), 0u);  // VIRTIO_BLK_F_DISCARD
}

TEST_P(BlockDeviceTest, UnsafeCacheDoesNotOfferFlush) {
  BlockConfig config = Config();
  config.cache = CacheMode::kUnsafe;
  Start(config);
  EXPECT_EQ(driver_->DeviceFeatures() & FeatureBit(9), 0u);  // VIRTIO_BLK_F_FLUSH
}

TEST_P(InFlightBlockDeviceTest, ResetWaitsForRequestsInFlightAndReportsNone) {
  if (std::string why = StartOnSlowDisk(); !why.empty()) GTEST_SKIP() << why;
  constexpr std::uint32_t kLen = 64 * 1024;
  std::vector<BlockRequestBuffers> reqs;
  for (std::uint64_t i = 0; i < 16; ++i) reqs.push_back(blk_.AddNew(kTypeIn, i * 128, kLen));
  Kick();
  const std::uint16_t answered = queue_.UsedIdx();
  ASSERT_LT(answered, 16) << "every read finished inside Submit";

  driver_->Write32(mmio::kStatus, 0);

  // Status reads 0, so the driver may reuse the buffers now: every read has landed...
  ASSERT_EQ(driver_->Read32(mmio::kStatus), 0u);
  for (std::uint64_t i = 0; i < 16; ++i) {
    EXPECT_EQ(blk_.ReadData(reqs[i]), Pattern(i * kLen, kLen)) << "request " << i;
  }
  // ...and nothing is left to land in them or to be reported, whatever the loop runs.
  const std::vector<std::uint8_t> reused(kLen, 0xee);
  for (const BlockRequestBuffers& req : reqs) blk_.WriteData(req, reused);
  for (const EventSource& source : device_->EventSources()) source.on_readable();
  ASSERT_TRUE(transport_->Quiesce().ok());
  for (const BlockRequestBuffers& req : reqs) EXPECT_EQ(blk_.ReadData(req), reused);
  EXPECT_EQ(queue_.UsedIdx(), answered);
}

// --- What a driver can make the host hold (issue 22) ----------------------------------------

TEST_P(BlockDeviceTest, HeadMadeAvailableAgainWhileInFlightMarksNeedsReset) {
  Start();
  BlockRequestBuffers req = blk_.Allocate(512);
  const std::uint16_t head = blk_.Add(req, kTypeIn, 0);
  queue_.Publish(head);  // before the device returned it

  Kick();

  EXPECT_NE(driver_->Read32(mmio::kStatus) & kStatusNeedsReset, 0u);
  EXPECT_EQ(Metric("invalid_chains"), 1u);
  ASSERT_EQ(WaitForUsed(1).size(), 1u);
  EXPECT_EQ(queue_.UsedIdx(), 1) << "one head handed back twice";
}

// Issue 22's flood: one read chain published again and again, a ring's worth each round, on
// a disk that finishes nothing meanwhile.
TEST_P(HungDiskBlockDeviceTest, RequestsInFlightNeverExceedTheQueueSize) {
  StartOnHungDisk();
  BlockRequestBuffers req = blk_.Allocate(4096);
  const std::uint16_t head = blk_.Add(req, kTypeIn, 0);
  int most = 0;
  for (int round = 0; round < 4; ++round) {
    for (int i = round == 0 ? 1 : 0; i < kQueueSize; ++i) queue_.Publish(head);
    Kick();
    most = std::max<int>(most, held_->held());
  }
  EXPECT_LE(most, kQueueSize);
  EXPECT_NE(driver_->Read32(mmio::kStatus) & kStatusNeedsReset, 0u);
}

// The guest, on a vCPU, publishes while the device drains. Made deterministic here: each time
// the device reads the clock (once a request, for the rate limiter) the driver has returned
// the heads the device answered to the ring, as a driver does that keeps its queue full.
class GuestOnTheClock final : public Clock {
 public:
  explicit GuestOnTheClock(std::function<void()> guest) : guest_(std::move(guest)) {}
  std::uint64_t NowNs() const override {
    guest_();
    return 1'000'000'000;
  }

 private:
  std::function<void()> guest_;
};

TEST_P(BlockDeviceTest, OnePassTakesAtMostAQueueOfRequestsFromADriverThatKeepsPublishing) {
  // Requests the device answers at once (an unknown type), two descriptors each.
  BlockRequestBuffers req = blk_.Allocate(0);
  for (int i = 0; i < kQueueSize / 2; ++i) blk_.Add(req, /*type=*/99, 0);
  constexpr int kPublished = 16 * kQueueSize;
  int published = kQueueSize / 2;
  GuestOnTheClock guest([&] {
    while (auto used = queue_.PopUsed()) {
      if (published == kPublished) break;
      queue_.Publish(static_cast<std::uint16_t>(used->id));
      ++published;
    }
  });
  BlockConfig config = Config();
  config.rate_limiter.ops = {1'000'000, 0, 1000};  // never runs out: only its clock matters
  Start(BlockDevice::Create(config, metrics_, guest));

  Kick();

  EXPECT_LE(queue_.UsedIdx(), kQueueSize);
  // Nothing is lost: the loop, run on, takes up the rest through the device's resume event.
  for (int spins = 0; spins < 1000 && queue_.UsedIdx() != kPublished; ++spins) ServeEvents();
  EXPECT_EQ(queue_.UsedIdx(), kPublished);
}

TEST_P(HungDiskBlockDeviceTest, ResetGivesUpAtTheLimitAndTheDeviceStaysStoppedUntilTheyFinish) {
  StartOnHungDisk();
  blk_.AddNew(kTypeIn, 0, 512);
  Kick();
  ASSERT_EQ(held_->held(), 1);

  // The driver resets and sets the device up again: the reset returns, but the device will
  // not start with the read still in the host.
  FakeDriverQueue fresh(memory_, 0x8000, kQueueSize);
  const absl::Status again = driver_->Initialize(kDriverFeatures, {fresh.layout()});

  EXPECT_FALSE(again.ok());
  EXPECT_NE(driver_->Read32(mmio::kStatus) & kStatusNeedsReset, 0u);
  // Once the read has finished, the next reset and start work, and nothing is reported.
  held_->Release();
  ASSERT_TRUE(driver_->Initialize(kDriverFeatures, {fresh.layout()}).ok());
  EXPECT_EQ(fresh.UsedIdx(), 0);
  EXPECT_EQ(queue_.UsedIdx(), 0);
}

TEST_P(HungDiskBlockDeviceTest, SnapshotGivesUpAtTheLimitWithAClearError) {
  StartOnHungDisk();
  BlockRequestBuffers req = blk_.AddNew(kTypeIn, 0, 512);
  Kick();

  auto state = transport_->SaveState();

  ASSERT_TRUE(absl::IsDeadlineExceeded(state.status())) << state.status();
  EXPECT_NE(state.status().message().find("1 requests still in flight in the host"),
            std::string::npos)
      << state.status();
  held_->Release();
  EXPECT_TRUE(transport_->SaveState().ok());
  EXPECT_EQ(blk_.Status(req), kStatusIoErr);
}

// --- Snapshots ------------------------------------------------------------------------------

bool Readable(const base::EventFd& fd) {
  pollfd pfd{fd.Get(), POLLIN, 0};
  return ::poll(&pfd, 1, 0) == 1;
}

TEST_P(BlockDeviceTest, RestoredDeviceContinuesTheRingsWhereTheSnapshotLeftThem) {
  Start();
  for (std::uint64_t i = 0; i < 3; ++i) blk_.AddNew(kTypeIn, i, 512);
  Kick();
  ASSERT_EQ(WaitForUsed(3).size(), 3u);
  // Published, and its notification swallowed by the old process's ioeventfd: the restored
  // device must still find it.
  BlockRequestBuffers pending = blk_.AddNew(kTypeIn, 9, 1024);
  auto state = transport_->SaveState();
  ASSERT_TRUE(state.ok()) << state.status();
  const std::uint32_t interrupts = driver_->Read32(mmio::kInterruptStatus);
  ASSERT_EQ(state->queues[0].next_avail, 3u);
  ASSERT_EQ(state->queues[0].next_used, 3u);

  ASSERT_TRUE(Restore(*state, Config()).ok());

  EXPECT_EQ(driver_->Read32(mmio::kStatus),
            kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  EXPECT_EQ(driver_->Read32(mmio::kInterruptStatus), interrupts);
  ASSERT_TRUE(Readable(transport_->queue_event(0)));
  transport_->HandleQueueEvent(0);
  auto used = WaitForUsed(1);
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(blk_.Status(pending), kStatusOk);
  EXPECT_EQ(blk_.ReadData(pending), Pattern(9 * 512, 1024));
  EXPECT_EQ(queue_.UsedIdx(), 4);

  std::vector<std::uint8_t> data(512, 0x5a);
  BlockRequestBuffers write = blk_.Allocate(512);
  blk_.WriteData(write, data);
  blk_.Add(write, kTypeOut, 20);
  BlockRequestBuffers read = blk_.AddNew(kTypeIn, 21, 512);
  Kick();
  ASSERT_EQ(WaitForUsed(2).size(), 2u);
  EXPECT_EQ(queue_.UsedIdx(), 6);
  EXPECT_EQ(blk_.Status(write), kStatusOk);
  EXPECT_EQ(disk_.Read(20 * 512, 512), data);
  EXPECT_EQ(blk_.Status(read), kStatusOk);
  EXPECT_EQ(blk_.ReadData(read), Pattern(21 * 512, 512));
  // With EVENT_IDX the restored device keeps publishing where it will next look.
  EXPECT_EQ(queue_.AvailEvent(), 6);
}

TEST_P(BlockDeviceTest, RestoredDeviceRaisesTheUsedBufferInterruptAgain) {
  Start();
  BlockRequestBuffers first = blk_.AddNew(kTypeIn, 0, 512);
  Run(first);
  driver_->Write32(mmio::kInterruptAck, kInterruptUsedBuffer);
  auto state = transport_->SaveState();
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_TRUE(Restore(*state, Config()).ok());
  EXPECT_FALSE(Readable(transport_->irqfd()));  // nothing was pending

  queue_.SetUsedEvent(1);  // EVENT_IDX: interrupt once used idx passes 1, as Linux asks
  BlockRequestBuffers second = blk_.AddNew(kTypeIn, 1, 512);
  EXPECT_EQ(Run(second), kStatusOk);
  EXPECT_EQ(driver_->Read32(mmio::kInterruptStatus), kInterruptUsedBuffer);
  EXPECT_TRUE(Readable(transport_->irqfd()));
}

TEST_P(BlockDeviceTest, PendingInterruptIsRaisedAgainAfterRestore) {
  Start();
  Run(blk_.AddNew(kTypeIn, 0, 512));  // InterruptStatus bit 0 stays set: not acknowledged
  auto state = transport_->SaveState();
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_TRUE(Restore(*state, Config()).ok());
  EXPECT_EQ(driver_->Read32(mmio::kInterruptStatus), kInterruptUsedBuffer);
  EXPECT_TRUE(Readable(transport_->irqfd()));
}

TEST_P(InFlightBlockDeviceTest, QuiesceCompletesEveryRequestInFlight) {
  if (std::string why = StartOnSlowDisk(); !why.empty()) GTEST_SKIP() << why;
  constexpr std::uint32_t kRequests = 32;
  constexpr std::uint32_t kLen = 64 * 1024;
  std::vector<BlockRequestBuffers> reqs;
  for (std::uint32_t i = 0; i < kRequests; ++i) {
    reqs.push_back(blk_.AddNew(kTypeIn, std::uint64_t{i} * kLen / 512, kLen));
  }
  Kick();
  ASSERT_LT(queue_.UsedIdx(), kRequests) << "every read finished inside Submit";

  ASSERT_TRUE(transport_->Quiesce().ok());

  EXPECT_EQ(queue_.UsedIdx(), kRequests);
  for (std::uint32_t i = 0; i < kRequests; ++i) {
    EXPECT_EQ(blk_.Status(reqs[i]), kStatusOk);
    EXPECT_EQ(blk_.ReadData(reqs[i]), Pattern(std::uint64_t{i} * kLen, kLen));
  }
  EXPECT_NE(driver_->Read32(mmio::kInterruptStatus) & kInterruptUsedBuffer, 0u);
}

TEST_P(InFlightBlockDeviceTest, SnapshotWithRequestsInFlightSavesThemAnswered) {
  if (std::string why = StartOnSlowDisk(); !why.empty()) GTEST_SKIP() << why;
  constexpr std::uint32_t kLen = 64 * 1024;
  for (std::uint32_t i = 0; i < 16; ++i) blk_.AddNew(kTypeIn, std::uint64_t{i} * kLen / 512, kLen);
  Kick();
  ASSERT_LT(queue_.UsedIdx(), 16) << "every read finished inside Submit";

  auto state = transport_->SaveState();

  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->queues[0].next_avail, 16u);
  EXPECT_EQ(state->queues[0].next_used, 16u);
  EXPECT_EQ(queue_.UsedIdx(), 16);
  ASSERT_TRUE(Restore(*state, slow_config_).ok());
  transport_->HandleQueueEvent(0);
  EXPECT_EQ(WaitForUsed(16).size(), 16u);  // the answered ones, and nothing twice
  BlockRequestBuffers after = blk_.AddNew(kTypeIn, 0, 4096);
  EXPECT_EQ(Run(after), kStatusOk);
  EXPECT_EQ(queue_.UsedIdx(), 17);
}

TEST_P(BlockDeviceTest, SnapshotBeforeDriverOkRestoresWithoutActivating) {
  ASSERT_NO_FATAL_FAILURE(AttachDevice(BlockDevice::Create(Config(), metrics_, clock_)));
  driver_->Write32(mmio::kStatus, kStatusAcknowledge);
  driver_->Write32(mmio::kStatus, kStatusAcknowledge | kStatusDriver);
  auto state = transport_->SaveState();
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_TRUE(Restore(*state, Config()).ok());
  EXPECT_FALSE(Readable(transport_->queue_event(0)));

  // The driver finishes its probe against the restored device.
  driver_->WriteDriverFeatures(kDriverFeatures);
  driver_->Write32(mmio::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  driver_->SetUpQueue(0, queue_.layout());
  driver_->Write32(mmio::kStatus,
                   kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  EXPECT_EQ(Run(blk_.AddNew(kTypeIn, 0, 512)), kStatusOk);
}

TEST_P(BlockDeviceTest, RestoreOntoAReadOnlyDriveRefusesFeaturesItDoesNotOffer) {
  Start();
  auto state = transport_->SaveState();
  ASSERT_TRUE(state.ok()) << state.status();
  BlockConfig read_only = Config();
  read_only.read_only = true;
  state->driver_features |= FeatureBit(13);  // DISCARD, as a writable drive negotiates it

  absl::Status restored = Restore(*state, read_only);

  EXPECT_TRUE(absl::IsInvalidArgument(restored)) << restored;
  EXPECT_EQ(driver_->Read32(mmio::kStatus), 0u);
}

TEST_P(BlockDeviceTest, RestoreOntoAnotherDriveIsRefused) {
  Start();
  auto state = transport_->SaveState();
  ASSERT_TRUE(state.ok()) << state.status();
  BlockConfig other = Config();
  other.drive_id = "disk1";

  absl::Status restored = Restore(*state, other);

  EXPECT_TRUE(absl::IsInvalidArgument(restored)) << restored;
  EXPECT_EQ(driver_->Read32(mmio::kStatus), 0u);
}

// The capacity in the configuration space, in sectors.
std::uint64_t ConfigCapacity(const FakeMmioDriver& driver) {
  return driver.Read32(mmio::kConfig) | (std::uint64_t{driver.Read32(mmio::kConfig + 4)} << 32);
}

// A drive swap's new file as its controller opens it (base::OpenDriveFile's flags).
base::UniqueFd OpenForSwap(const std::string& path, int access = O_RDWR) {
  return base::UniqueFd(::open(path.c_str(), access | O_CLOEXEC));
}

TEST_P(BlockDeviceTest, SwappedFileServesLaterReadsAndItsCapacityReachesTheDriver) {
  Start();
  TempDisk bigger(2 * kDiskSize);
  const std::vector<std::uint8_t> marker(512, 0xab);
  {
    int fd = ::open(bigger.path().c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_EQ(::pwrite(fd, marker.data(), marker.size(), 0), 512);
    ::close(fd);
  }
  const std::uint32_t generation = driver_->Read32(mmio::kConfigGeneration);

  ASSERT_TRUE(device_->ReplaceFile(bigger.path(), OpenForSwap(bigger.path())).ok());

  EXPECT_EQ(ConfigCapacity(*driver_), 2 * kDiskSize / 512);
  EXPECT_NE(driver_->Read32(mmio::kConfigGeneration), generation);
  EXPECT_EQ(driver_->Read32(mmio::kInterruptStatus) & kInterruptConfigChange,
            kInterruptConfigChange);
  EXPECT_GE(transport_->irqfd().Consume(), 1u);
  BlockRequestBuffers first = blk_.AddNew(kTypeIn, 0, 512);
  EXPECT_EQ(Run(first), kStatusOk);
  EXPECT_EQ(blk_.ReadData(first), marker);
  // Past the old file's end, inside the new one's.
  BlockRequestBuffers beyond = blk_.AddNew(kTypeIn, kDiskSize / 512, 512);
  EXPECT_EQ(Run(beyond), kStatusOk);
  EXPECT_EQ(blk_.ReadData(beyond), Pattern(kDiskSize, 512));
  EXPECT_EQ(device_->path(), bigger.path());
  EXPECT_EQ(Metric("file_swaps"), 1u);
}

TEST_P(BlockDeviceTest, SwapToAFileOpenedReadOnlyForAWritableDriveIsRefusedAndTheOldFileStays) {
  Start();
  TempDisk other(2 * kDiskSize);
  const std::uint32_t generation = driver_->Read32(mmio::kConfigGeneration);

  absl::Status swapped = device_->ReplaceFile(other.path(), OpenForSwap(other.path(), O_RDONLY));

  EXPECT_EQ(swapped.code(), absl::StatusCode::kInvalidArgument) << swapped;
  EXPECT_NE(swapped.message().find(other.path()), std::string::npos) << swapped;
  EXPECT_NE(swapped.message().find("reading and writing"), std::string::npos) << swapped;
  EXPECT_EQ(driver_->Read32(mmio::kConfigGeneration), generation);
  EXPECT_EQ(ConfigCapacity(*driver_), kDiskSize / 512);
  EXPECT_EQ(device_->path(), disk_.path());
  BlockRequestBuffers req = blk_.AddNew(kTypeIn, 1, 512);
  EXPECT_EQ(Run(req), kStatusOk);
  EXPECT_EQ(blk_.ReadData(req), Pattern(512, 512));
  EXPECT_EQ(Metric("file_swaps"), 0u);
}

TEST_P(HungDiskBlockDeviceTest, SwapWaitsForRequestsInFlightAndGivesUpAtTheLimit) {
  StartOnHungDisk();
  TempDisk other(2 * kDiskSize);
  blk_.AddNew(kTypeIn, 0, 512);
  Kick();
  ServeEvents();
  ASSERT_EQ(held_->held(), 1);

  absl::Status swapped = device_->ReplaceFile(other.path(), OpenForSwap(other.path()));

  EXPECT_EQ(swapped.code(), absl::StatusCode::kDeadlineExceeded) << swapped;
  EXPECT_EQ(held_->replaced(), 0);
  EXPECT_EQ(device_->path(), disk_.path());
  EXPECT_EQ(ConfigCapacity(*driver_), kDiskSize / 512);
  // Once the old file's request has finished, the swap goes through.
  held_->Release();
  ASSERT_TRUE(device_->ReplaceFile(other.path(), OpenForSwap(other.path())).ok());
  EXPECT_EQ(held_->replaced(), 1);
  EXPECT_EQ(ConfigCapacity(*driver_), 2 * kDiskSize / 512);
}

INSTANTIATE_TEST_SUITE_P(Engines, BlockDeviceTest,
                         ::testing::Values(EngineKind::kIoUring, EngineKind::kSync),
                         [](const ::testing::TestParamInfo<EngineKind>& param_info) {
                           return param_info.param == EngineKind::kIoUring ? "IoUring" : "Sync";
                         });
// Only the io_uring engine keeps requests in flight after a notification is handled (the sync
// engine answers each one inside it), so these cases are the io_uring engine's alone.
INSTANTIATE_TEST_SUITE_P(Engines, InFlightBlockDeviceTest, ::testing::Values(EngineKind::kIoUring),
                         [](const ::testing::TestParamInfo<EngineKind>&) { return "IoUring"; });

INSTANTIATE_TEST_SUITE_P(Engines, HungDiskBlockDeviceTest, ::testing::Values(EngineKind::kSync),
                         [](const ::testing::TestParamInfo<EngineKind>&) { return "Held"; });

// --- Creation errors -----------------------------------------------------------------------

TEST(BlockDeviceCreate, MissingFileIsAnError) {
  BlockConfig config;
  config.drive_id = "x";
  config.path = "/nonexistent/ember-disk.img";
  auto device = BlockDevice::Create(config);
  ASSERT_FALSE(device.ok());
  EXPECT_NE(std::string(device.status().message()).find("/nonexistent/ember-disk.img"),
            std::string::npos);
}

TEST(BlockDeviceCreate, SizeNotAMultipleOf512IsAnError) {
  TempDisk disk(1000);
  BlockConfig config;
  config.drive_id = "x";
  config.path = disk.path();
  auto device = BlockDevice::Create(config);
  ASSERT_FALSE(device.ok());
  EXPECT_NE(std::string(device.status().message()).find("multiple of 512"), std::string::npos);
}

TEST(BlockDeviceCreate, DirectoryIsAnError) {
  BlockConfig config;
  config.drive_id = "x";
  config.path = ::testing::TempDir();
  config.read_only = true;
  EXPECT_FALSE(BlockDevice::Create(config).ok());
}

}  // namespace
}  // namespace ember::virtio::block
