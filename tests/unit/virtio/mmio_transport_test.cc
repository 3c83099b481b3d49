#include "virtio/mmio/mmio_transport.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/epoll.h>

#include <array>
#include <vector>

#include "virtio/mmio/registers.h"
#include "virtio/spec.h"
#include "virtio/testing/fake_driver_queue.h"
#include "virtio/testing/fake_mmio_driver.h"
#include "vmm/base/unique_fd.h"

namespace ember::virtio {
namespace {

using testing::FakeDriverQueue;
using testing::FakeMmioDriver;

constexpr std::uint64_t kMemSize = 1 << 20;
constexpr std::uint64_t kDeviceFeatureBit = 3;  // a device-specific feature the fake offers
// The fake's own state at a snapshot: some alternative the transport must carry untouched.
const block::BlockState kBuckets{{TokenBucketState{1000, 250, 0, 0}, std::nullopt}};
constexpr std::uint64_t kOffered = FeatureBit(kFeatureVersion1) |
                                   FeatureBit(kFeatureEventIdx) | FeatureBit(kDeviceFeatureBit);
constexpr std::uint32_t kAckDriver = kStatusAcknowledge | kStatusDriver;
constexpr std::uint32_t kAckDriverFeatures = kAckDriver | kStatusFeaturesOk;

using namespace mmio;  // the register map

// A two-queue device that records what the transport does to it.
class RecordingDevice : public VirtioDevice {
 public:
  std::uint32_t device_id() const override { return 42; }
  std::uint64_t offered_features() const override { return kOffered; }
  std::span<const std::uint16_t> queue_max_sizes() const override { return sizes_; }
  std::string name() const override { return "recording"; }
  void ReadConfig(std::uint64_t offset, std::span<std::uint8_t> data) const override {
    for (std::size_t i = 0; i < data.size(); ++i) {
      if (offset + i < config.size()) data[i] = config[offset + i];
    }
  }
  bool WriteConfig(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    if (offset < read_only_config_bytes) return false;
    for (std::size_t i = 0; i < data.size(); ++i) {
      if (offset + i < config.size()) config[offset + i] = data[i];
    }
    return true;
  }
  absl::Status Activate(ActivationContext context) override {
    if (!activate_result.ok()) return activate_result;
    activated = true;
    features = context.features;
    signals = context.signals;
    queues_enabled.clear();
    for (auto& q : context.queues) queues_enabled.push_back(q.has_value());
    queues = std::move(context.queues);
    return absl::OkStatus();
  }
  void Reset() override {
    ++resets;
    activated = false;
    queues.clear();
  }
  void ProcessQueue(std::size_t index) override { processed.push_back(index); }
  absl::Status Quiesce() override {
    ++quiesces;
    return quiesce_result;
  }
  std::vector<std::optional<QueuePositions>> SaveQueuePositions() const override {
    if (!snapshots) return VirtioDevice::SaveQueuePositions();
    std::vector<std::optional<QueuePositions>> positions;
    for (const auto& q : queues) {
      positions.push_back(q ? std::optional(QueuePositions{q->next_avail(), q->next_used()})
                            : std::nullopt);
    }
    return positions;
  }
  DeviceState SaveDeviceState() const override { return specific; }
  absl::Status RestoreDeviceState(const DeviceState& state) override {
    if (!snapshots) return VirtioDevice::RestoreDeviceState(state);
    specific = state;
    return absl::OkStatus();
  }

  std::array<std::uint8_t, 8> config{1, 2, 3, 4, 5, 6, 7, 8};
  // Writes starting below this offset are refused, as a device's read-only fields are.
  std::uint64_t read_only_config_bytes = 0;
  absl::Status activate_result = absl::OkStatus();
  bool activated = false;
  std::uint64_t features = 0;
  DeviceSignals* signals = nullptr;
  std::vector<bool> queues_enabled;
  int resets = 0;
  std::vector<std::size_t> processed;
  // Snapshot support, off by default like a device that never implemented it.
  bool snapshots = false;
  std::vector<std::optional<Queue>> queues;
  DeviceState specific;
  absl::Status quiesce_result = absl::OkStatus();
  int quiesces = 0;

 private:
  std::array<std::uint16_t, 2> sizes_{16, 8};
};

class MmioTransportTest : public ::testing::Test {
 protected:
  MmioTransportTest()
      : memory_(base::GuestMemory::Create({{0, kMemSize}}).value()),
        queue0_(memory_, 0x1000, 16),
        queue1_(memory_, 0x3000, 8) {
    auto device = std::make_unique<RecordingDevice>();
    device_ = device.get();
    transport_ =
        MmioTransport::Create(memory_, std::move(device), base::EventFd::Create().value(),
                              metrics_)
            .value();
    driver_ = std::make_unique<FakeMmioDriver>(*transport_);
  }

  absl::Status InitializeBothQueues() {
    return driver_->Initialize(FeatureBit(kFeatureVersion1),
                               {queue0_.layout(), queue1_.layout()});
  }
  std::uint64_t Metric(const std::string& name) {
    return metrics_.Get("mmio_recording", name)->Get();
  }

  base::MetricsRegistry metrics_;
  base::GuestMemory memory_;
  FakeDriverQueue queue0_;
  FakeDriverQueue queue1_;
  RecordingDevice* device_ = nullptr;
  std::unique_ptr<MmioTransport> transport_;
  std::unique_ptr<FakeMmioDriver> driver_;
};

TEST_F(MmioTransportTest, IdentityRegistersDescribeAVersion2Device) {
  EXPECT_EQ(driver_->Read32(kMagicValue), kMagic);
  EXPECT_EQ(driver_->Read32(kVersion), kVersion2);
  EXPECT_EQ(driver_->Read32(kDeviceId), 42u);
  EXPECT_EQ(driver_->Read32(mmio::kVendorId), MmioTransport::kVendorId);
}

TEST_F(MmioTransportTest, DeviceFeaturesAreReadThroughTheSelector) {
  EXPECT_EQ(driver_->DeviceFeatures(), kOffered);
  driver_->Write32(kDeviceFeaturesSel, 2);
  EXPECT_EQ(driver_->Read32(kDeviceFeatures), 0u);
}

TEST_F(MmioTransportTest, NarrowControlRegisterReadReturnsZeroAndIsCounted) {
  std::array<std::uint8_t, 2> data{0xff, 0xff};
  transport_->Read(kMagicValue, data);
  EXPECT_EQ(data[0], 0);
  EXPECT_EQ(data[1], 0);
  EXPECT_EQ(Metric("invalid_register_access"), 1u);
}

TEST_F(MmioTransportTest, MisalignedControlRegisterWriteIsIgnored) {
  driver_->Write32(kStatus + 1, kStatusAcknowledge);
  EXPECT_EQ(driver_->Read32(kStatus), 0u);
  EXPECT_EQ(Metric("invalid_register_access"), 1u);
}

TEST_F(MmioTransportTest, InitializationActivatesDeviceWithNegotiatedFeaturesAndQueues) {
  ASSERT_TRUE(InitializeBothQueues().ok());
  EXPECT_TRUE(device_->activated);
  EXPECT_EQ(device_->features, FeatureBit(kFeatureVersion1));
  EXPECT_EQ(device_->queues_enabled, (std::vector<bool>{true, true}));
  EXPECT_EQ(driver_->Read32(kStatus), kAckDriverFeatures | kStatusDriverOk);
}

TEST_F(MmioTransportTest, QueueLeftDisabledIsHandedOverAsAbsent) {
  ASSERT_TRUE(driver_->Initialize(FeatureBit(kFeatureVersion1), {queue0_.layout()}).ok());
  EXPECT_EQ(device_->queues_enabled, (std::vector<bool>{true, false}));
}

TEST_F(MmioTransportTest, FeaturesWithoutVersion1AreRefused) {
  EXPECT_FALSE(driver_->Initialize(FeatureBit(kDeviceFeatureBit), {}).ok());
  EXPECT_EQ(driver_->Read32(kStatus) & kStatusFeaturesOk, 0u);
  EXPECT_FALSE(device_->activated);
}

TEST_F(MmioTransportTest, FeaturesTheDeviceDidNotOfferAreRefused) {
  driver_->Write32(kStatus, kStatusAcknowledge);
  driver_->Write32(kStatus, kAckDriver);
  driver_->WriteDriverFeatures(FeatureBit(kFeatureVersion1) | FeatureBit(kFeatureIndirectDesc));
  driver_->Write32(kStatus, kAckDriverFeatures);
  EXPECT_EQ(driver_->Read32(kStatus), kAckDriver);
}

TEST_F(MmioTransportTest, RefusedFeatureSetIsCounted) {
  driver_->Write32(kStatus, kStatusAcknowledge);
  driver_->Write32(kStatus, kAckDriver);
  driver_->WriteDriverFeatures(FeatureBit(kFeatureVersion1) | FeatureBit(kFeatureIndirectDesc));

  driver_->Write32(kStatus, kAckDriverFeatures);

  EXPECT_EQ(Metric("features_refused"), 1u);
}

TEST_F(MmioTransportTest, AcceptedFeatureSetIsNotCountedAsRefused) {
  ASSERT_TRUE(InitializeBothQueues().ok());
  EXPECT_EQ(Metric("features_refused"), 0u);
}

TEST_F(MmioTransportTest, DriverFeaturesBeforeDriverStatusAreIgnored) {
  driver_->Write32(kStatus, kStatusAcknowledge);
  driver_->WriteDriverFeatures(FeatureBit(kFeatureVersion1));
  driver_->Write32(kStatus, kAckDriver);
  driver_->Write32(kStatus, kAckDriverFeatures);
  EXPECT_EQ(driver_->Read32(kStatus) & kStatusFeaturesOk, 0u);
}

TEST_F(MmioTransportTest, DriverFeaturesAfterFeaturesOkAreIgnored) {
  ASSERT_TRUE(InitializeBothQueues().ok());
  driver_->WriteDriverFeatures(kOffered);
  driver_->Write32(kStatus, 0);
  EXPECT_EQ(Metric("invalid_register_access"), 2u);
  EXPECT_EQ(device_->features, FeatureBit(kFeatureVersion1));
}

TEST_F(MmioTransportTest, StatusBitsOutOfOrderAreIgnored) {
  driver_->Write32(kStatus, kStatusDriver);
  EXPECT_EQ(driver_->Read32(kStatus), 0u);
}

TEST_F(MmioTransportTest, StatusCannotClearBitsExceptByReset) {
  driver_->Write32(kStatus, kStatusAcknowledge);
  driver_->Write32(kStatus, kAckDriver);
  driver_->Write32(kStatus, kStatusAcknowledge);
  EXPECT_EQ(driver_->Read32(kStatus), kAckDriver);
}

TEST_F(MmioTransportTest, DriverOkWithoutFeaturesOkIsIgnored) {
  driver_->Write32(kStatus, kStatusAcknowledge);
  driver_->Write32(kStatus, kAckDriver);
  driver_->Write32(kStatus, kAckDriver | kStatusDriverOk);
  EXPECT_EQ(driver_->Read32(kStatus), kAckDriver);
  EXPECT_FALSE(device_->activated);
}

TEST_F(MmioTransportTest, FailedCanBeSetAtAnyTime) {
  driver_->Write32(kStatus, kStatusAcknowledge);
  driver_->Write32(kStatus, kStatusAcknowledge | kStatusFailed);
  EXPECT_EQ(driver_->Read32(kStatus), kStatusAcknowledge | kStatusFailed);
}

// Walks the driver up to FEATURES_OK with `features` and queue 0 set up; the status write
// that follows is the test's.
void NegotiateUpToFeaturesOk(const FakeMmioDriver& driver, std::uint64_t features,
                             const QueueLayout& queue) {
  driver.Write32(kStatus, kStatusAcknowledge);
  driver.Write32(kStatus, kAckDriver);
  driver.WriteDriverFeatures(features);
  driver.Write32(kStatus, kAckDriverFeatures);
  driver.SetUpQueue(0, queue);
}

constexpr std::uint32_t kRunning = kAckDriverFeatures | kStatusDriverOk;

TEST_F(MmioTransportTest, DriverOkInTheWriteThatRefusesFeaturesOkIsNotGranted) {
  driver_->Write32(kStatus, kStatusAcknowledge);
  driver_->Write32(kStatus, kAckDriver);
  driver_->WriteDriverFeatures(FeatureBit(kDeviceFeatureBit));  // no VERSION_1

  driver_->Write32(kStatus, kRunning);

  EXPECT_EQ(driver_->Read32(kStatus), kAckDriver);
  EXPECT_FALSE(device_->activated);
}

TEST_F(MmioTransportTest, DeviceNeverReadsRunningWithoutActivationAfterAFeatureRetry) {
  driver_->Write32(kStatus, kStatusAcknowledge);
  driver_->Write32(kStatus, kAckDriver);
  driver_->WriteDriverFeatures(FeatureBit(kDeviceFeatureBit));
  driver_->Write32(kStatus, kRunning);  // refused: no VERSION_1
  driver_->WriteDriverFeatures(FeatureBit(kFeatureVersion1));

  driver_->Write32(kStatus, kRunning);

  EXPECT_EQ(driver_->Read32(kStatus), kRunning);
  EXPECT_TRUE(device_->activated);
}

TEST_F(MmioTransportTest, DriverOkAfterFailedDoesNotActivate) {
  NegotiateUpToFeaturesOk(*driver_, FeatureBit(kFeatureVersion1), queue0_.layout());
  driver_->Write32(kStatus, kAckDriverFeatures | kStatusFailed);

  driver_->Write32(kStatus, kRunning | kStatusFailed);

  EXPECT_EQ(driver_->Read32(kStatus), kAckDriverFeatures | kStatusFailed);
  EXPECT_FALSE(device_->activated);
  EXPECT_EQ(Metric("invalid_register_access"), 1u);
}

TEST_F(MmioTransportTest, DriverOkWrittenTogetherWithFailedDoesNotActivate) {
  NegotiateUpToFeaturesOk(*driver_, FeatureBit(kFeatureVersion1), queue0_.layout());

  driver_->Write32(kStatus, kRunning | kStatusFailed);

  EXPECT_EQ(driver_->Read32(kStatus), kAckDriverFeatures | kStatusFailed);
  EXPECT_FALSE(device_->activated);
}

TEST_F(MmioTransportTest, FailedDeviceWorksAgainAfterReset) {
  NegotiateUpToFeaturesOk(*driver_, FeatureBit(kFeatureVersion1), queue0_.layout());
  driver_->Write32(kStatus, kAckDriverFeatures | kStatusFailed);

  ASSERT_TRUE(InitializeBothQueues().ok());

  EXPECT_EQ(driver_->Read32(kStatus), kRunning);
  EXPECT_TRUE(device_->activated);
}

TEST_F(MmioTransportTest, QueueRegistersBeforeFeaturesOkAreIgnored) {
  driver_->Write32(kStatus, kStatusAcknowledge);
  driver_->Write32(kQueueSel, 0);
  driver_->Write32(kQueueNum, 4);
  EXPECT_EQ(driver_->Read32(kQueueNum), 0u);
}

TEST_F(MmioTransportTest, QueueLayoutIsFrozenWhileReady) {
  driver_->Write32(kStatus, kStatusAcknowledge);
  driver_->Write32(kStatus, kAckDriver);
  driver_->WriteDriverFeatures(FeatureBit(kFeatureVersion1));
  driver_->Write32(kStatus, kAckDriverFeatures);
  driver_->SetUpQueue(0, queue0_.layout());
  driver_->Write32(kQueueNum, 4);
  EXPECT_EQ(driver_->Read32(kQueueNum), 16u);
  EXPECT_EQ(driver_->Read32(kQueueReady), 1u);
}

TEST_F(MmioTransportTest, QueueNumMaxIsZeroForAQueueThatDoesNotExist) {
  driver_->Write32(kQueueSel, 1);
  EXPECT_EQ(driver_->Read32(kQueueNumMax), 8u);
  driver_->Write32(kQueueSel, 2);
  EXPECT_EQ(driver_->Read32(kQueueNumMax), 0u);
}

TEST_F(MmioTransportTest, BadQueueLayoutAtDriverOkSetsNeedsReset) {
  QueueLayout bad = queue0_.layout();
  bad.used_ring = kMemSize + 0x1000;
  EXPECT_FALSE(driver_->Initialize(FeatureBit(kFeatureVersion1), {bad}).ok());
  EXPECT_NE(driver_->Read32(kStatus) & kStatusNeedsReset, 0u);
  EXPECT_EQ(driver_->Read32(kInterruptStatus), kInterruptConfigChange);
  EXPECT_FALSE(device_->activated);
  EXPECT_EQ(Metric("activate_fails"), 1u);
}

TEST_F(MmioTransportTest, DeviceActivationErrorSetsNeedsReset) {
  device_->activate_result = absl::FailedPreconditionError("no");
  EXPECT_FALSE(InitializeBothQueues().ok());
  EXPECT_NE(driver_->Read32(kStatus) & kStatusNeedsReset, 0u);
}

TEST_F(MmioTransportTest, ResetClearsStatusQueuesAndInterrupts) {
  ASSERT_TRUE(InitializeBothQueues().ok());
  device_->signals->SignalUsedBuffer();
  const int resets_before = device_->resets;

  driver_->Write32(kStatus, 0);

  EXPECT_EQ(device_->resets, resets_before + 1);
  EXPECT_FALSE(device_->activated);
  EXPECT_EQ(driver_->Read32(kStatus), 0u);
  EXPECT_EQ(driver_->Read32(kInterruptStatus), 0u);
  driver_->Write32(kQueueSel, 0);
  EXPECT_EQ(driver_->Read32(kQueueReady), 0u);
  EXPECT_EQ(driver_->Read32(kQueueNum), 0u);
}

TEST_F(MmioTransportTest, DeviceCanBeReinitializedAfterReset) {
  ASSERT_TRUE(InitializeBothQueues().ok());
  driver_->Write32(kStatus, 0);
  ASSERT_TRUE(InitializeBothQueues().ok());
  EXPECT_TRUE(device_->activated);
}

TEST_F(MmioTransportTest, QueueNotifyWriteSignalsTheQueueEventFd) {
  driver_->Write32(kQueueNotify, 1);
  EXPECT_EQ(transport_->queue_event(0).Consume(), 0u);
  EXPECT_EQ(transport_->queue_event(1).Consume(), 1u);
}

TEST_F(MmioTransportTest, QueueNotifyForUnknownQueueIsCounted) {
  driver_->Write32(kQueueNotify, 7);
  EXPECT_EQ(Metric("invalid_register_access"), 1u);
}

TEST_F(MmioTransportTest, HandleQueueEventConsumesTheEventAndProcessesTheQueue) {
  driver_->Write32(kQueueNotify, 1);
  transport_->HandleQueueEvent(1);
  EXPECT_EQ(device_->processed, (std::vector<std::size_t>{1}));
  EXPECT_EQ(transport_->queue_event(1).Consume(), 0u);
}

TEST_F(MmioTransportTest, EdgeTriggeredNotificationsAreEachProcessedWithoutDrainingTheEventFd) {
  // As ember-vmm's loop watches a queue's ioeventfd.
  base::UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  ASSERT_TRUE(epoll);
  epoll_event watch{};
  watch.events = EPOLLIN | EPOLLET;
  ASSERT_EQ(::epoll_ctl(epoll.Get(), EPOLL_CTL_ADD, transport_->queue_event(1).Get(), &watch), 0);
  auto dispatch = [&] {
    epoll_event ready{};
    const int n = ::epoll_wait(epoll.Get(), &ready, 1, 0);
    if (n == 1) transport_->ProcessQueueNotification(1);
    return n;
  };
  driver_->Write32(kQueueNotify, 1);
  EXPECT_EQ(dispatch(), 1);
  EXPECT_EQ(dispatch(), 0) << "one edge per notification";
  // The count was never read, and the next notification still raises an edge.
  driver_->Write32(kQueueNotify, 1);
  EXPECT_EQ(dispatch(), 1);
  EXPECT_EQ(device_->processed, (std::vector<std::size_t>{1, 1}));
  EXPECT_EQ(transport_->queue_event(1).Consume(), 2u);
}

TEST_F(MmioTransportTest, UsedBufferSignalSetsInterruptStatusAndIrqfd) {
  ASSERT_TRUE(InitializeBothQueues().ok());
  device_->signals->SignalUsedBuffer();
  EXPECT_EQ(driver_->Read32(kInterruptStatus), kInterruptUsedBuffer);
  EXPECT_EQ(transport_->irqfd().Consume(), 1u);
}

TEST_F(MmioTransportTest, InterruptAckClearsOnlyTheAcknowledgedBits) {
  ASSERT_TRUE(InitializeBothQueues().ok());
  device_->signals->SignalUsedBuffer();
  device_->signals->SignalConfigChange();
  driver_->Write32(kInterruptAck, kInterruptUsedBuffer);
  EXPECT_EQ(driver_->Read32(kInterruptStatus), kInterruptConfigChange);
}

TEST_F(MmioTransportTest, ConfigChangeBumpsConfigGeneration) {
  ASSERT_TRUE(InitializeBothQueues().ok());
  const std::uint32_t before = driver_->Read32(kConfigGeneration);
  device_->signals->SignalConfigChange();
  EXPECT_EQ(driver_->Read32(kConfigGeneration), before + 1);
}

TEST_F(MmioTransportTest, NeedsResetFromTheDeviceRaisesConfigInterrupt) {
  ASSERT_TRUE(InitializeBothQueues().ok());
  device_->signals->MarkNeedsReset();
  EXPECT_NE(driver_->Read32(kStatus) & kStatusNeedsReset, 0u);
  EXPECT_EQ(driver_->Read32(kInterruptStatus), kInterruptConfigChange);
  EXPECT_EQ(transport_->irqfd().Consume(), 1u);
  EXPECT_EQ(Metric("needs_reset"), 1u);
}

TEST_F(MmioTransportTest, ConfigSpaceIsReadAtAnyWidth) {
  std::array<std::uint8_t, 2> data{};
  transport_->Read(kConfig + 3, data);
  EXPECT_EQ(data[0], 4);
  EXPECT_EQ(data[1], 5);
}

TEST_F(MmioTransportTest, ConfigSpaceWritesReachTheDevice) {
  const std::array<std::uint8_t, 1> data{0xaa};
  transport_->Write(kConfig + 1, data);
  EXPECT_EQ(device_->config[1], 0xaa);
  EXPECT_EQ(Metric("config_writes_refused"), 0u);
}

TEST_F(MmioTransportTest, ConfigWriteTheDeviceRefusesIsCountedAndChangesNothing) {
  device_->read_only_config_bytes = 4;
  const std::array<std::uint8_t, 4> data{0xaa, 0xbb, 0xcc, 0xdd};

  transport_->Write(kConfig, data);

  EXPECT_EQ(device_->config[0], 1);
  EXPECT_EQ(Metric("config_writes_refused"), 1u);
}

TEST_F(MmioTransportTest, SharedMemoryRegionsReadAsAbsent) {
  EXPECT_EQ(driver_->Read32(kShmLenLow), 0xffffffffu);
  EXPECT_EQ(driver_->Read32(kShmLenLow + 4), 0xffffffffu);
}

// --- Snapshots ------------------------------------------------------------------------------

// A second transport and device, as a restore in a new process builds them, over the same
// guest memory.
struct Restored {
  explicit Restored(const base::GuestMemory& memory, base::MetricsRegistry& metrics) {
    auto owned = std::make_unique<RecordingDevice>();
    device = owned.get();
    device->snapshots = true;
    transport =
        MmioTransport::Create(memory, std::move(owned), base::EventFd::Create().value(), metrics)
            .value();
    driver = std::make_unique<FakeMmioDriver>(*transport);
  }
  RecordingDevice* device;
  std::unique_ptr<MmioTransport> transport;
  std::unique_ptr<FakeMmioDriver> driver;
};

bool Readable(const base::EventFd& fd) {
  pollfd pfd{fd.Get(), POLLIN, 0};
  return ::poll(&pfd, 1, 0) == 1;
}

class MmioSnapshotTest : public MmioTransportTest {
 protected:
  MmioSnapshotTest() { device_->snapshots = true; }

  // The driver probed both queues; the device took two chains from queue 0 and answered one.
  void RunSomeWork() {
    ASSERT_TRUE(InitializeBothQueues().ok());
    const testing::FakeBuffer buffer{0x8000, 16, true};
    queue0_.AddChain(std::span(&buffer, 1));
    queue0_.AddChain(std::span(&buffer, 1));
    Queue& queue = *device_->queues[0];
    auto first = queue.Pop();
    ASSERT_TRUE(first.ok() && first->has_value());
    ASSERT_TRUE(queue.Pop().ok());
    queue.AddUsed((*first)->head, 16);
    device_->signals->SignalUsedBuffer();
    device_->signals->SignalConfigChange();
    driver_->Write32(kInterruptAck, kInterruptConfigChange);
    driver_->Write32(kQueueSel, 1);
    driver_->Write32(kDeviceFeaturesSel, 1);
    device_->specific = kBuckets;
  }

  VirtioDeviceSnapshot Save() {
    auto state = transport_->SaveState();
    EXPECT_TRUE(state.ok()) << state.status();
    return state.ok() ? *state : VirtioDeviceSnapshot{};
  }
};

TEST_F(MmioSnapshotTest, SaveRecordsRegistersQueuesAndPositions) {
  RunSomeWork();

  const VirtioDeviceSnapshot state = Save();

  EXPECT_EQ(state.device_id, 42u);
  EXPECT_EQ(state.name, "recording");
  EXPECT_EQ(state.status, kAckDriverFeatures | kStatusDriverOk);
  EXPECT_EQ(state.driver_features, FeatureBit(kFeatureVersion1));
  EXPECT_EQ(state.device_features_sel, 1u);
  EXPECT_EQ(state.queue_sel, 1u);
  EXPECT_EQ(state.interrupt_status, kInterruptUsedBuffer);
  EXPECT_EQ(state.config_generation, 1u);
  ASSERT_EQ(state.queues.size(), 2u);
  EXPECT_EQ(state.queues[0].size, 16u);
  EXPECT_TRUE(state.queues[0].ready);
  EXPECT_EQ(state.queues[0].desc_addr, queue0_.layout().desc_table);
  EXPECT_EQ(state.queues[0].driver_addr, queue0_.layout().avail_ring);
  EXPECT_EQ(state.queues[0].device_addr, queue0_.layout().used_ring);
  EXPECT_EQ(state.queues[0].next_avail, 2u);
  EXPECT_EQ(state.queues[0].next_used, 1u);
  EXPECT_EQ(state.queues[1].size, 8u);
  EXPECT_EQ(state.queues[1].next_avail, 0u);
  EXPECT_EQ(state.device, DeviceState(kBuckets));
}

TEST_F(MmioSnapshotTest, SaveQuiescesTheDeviceFirst) {
  RunSomeWork();
  Save();
  EXPECT_EQ(device_->quiesces, 1);
}

TEST_F(MmioSnapshotTest, SaveFailsWhenQuiescingFails) {
  RunSomeWork();
  device_->quiesce_result = absl::InternalError("io_uring gone");
  EXPECT_FALSE(transport_->SaveState().ok());
}

TEST_F(MmioSnapshotTest, SaveOfAnActivatedDeviceWithoutSnapshotSupportFails) {
  RunSomeWork();
  device_->snapshots = false;
  auto state = transport_->SaveState();
  EXPECT_TRUE(absl::IsFailedPrecondition(state.status())) << state.status();
}

TEST_F(MmioSnapshotTest, SaveOfAnUnusedDeviceWithoutSnapshotSupportWorks) {
  device_->snapshots = false;
  auto state = transport_->SaveState();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->status, 0u);
}

TEST_F(MmioSnapshotTest, RestoreShowsTheDriverTheSameRegisters) {
  RunSomeWork();
  const VirtioDeviceSnapshot state = Save();
  Restored restored(memory_, metrics_);

  ASSERT_TRUE(restored.transport->RestoreState(state).ok());

  const FakeMmioDriver& driver = *restored.driver;
  EXPECT_EQ(driver.Read32(kStatus), kAckDriverFeatures | kStatusDriverOk);
  EXPECT_EQ(driver.Read32(kInterruptStatus), kInterruptUsedBuffer);
  EXPECT_EQ(driver.Read32(kConfigGeneration), 1u);
  EXPECT_EQ(driver.Read32(kDeviceFeatures), kOffered >> 32);  // selector 1: the high word
  EXPECT_EQ(driver.Read32(kQueueNum), 8u);                    // selector 1
  EXPECT_EQ(driver.Read32(kQueueReady), 1u);
  EXPECT_EQ(driver.Read32(kQueueDescLow), static_cast<std::uint32_t>(queue1_.layout().desc_table));
  EXPECT_EQ(driver.Read32(kQueueDeviceLow), static_cast<std::uint32_t>(queue1_.layout().used_ring));
}

TEST_F(MmioSnapshotTest, RestoreActivatesTheDeviceWithTheSavedPositions) {
  RunSomeWork();
  const VirtioDeviceSnapshot state = Save();
  Restored restored(memory_, metrics_);

  ASSERT_TRUE(restored.transport->RestoreState(state).ok());

  const RecordingDevice& device = *restored.device;
  EXPECT_TRUE(device.activated);
  EXPECT_EQ(device.features, FeatureBit(kFeatureVersion1));
  EXPECT_EQ(device.queues_enabled, (std::vector<bool>{true, true}));
  EXPECT_EQ(device.queues[0]->next_avail(), 2);
  EXPECT_EQ(device.queues[0]->next_used(), 1);
  EXPECT_EQ(device.queues[0]->layout().used_ring, queue0_.layout().used_ring);
  EXPECT_EQ(device.specific, DeviceState(kBuckets));
}

TEST_F(MmioSnapshotTest, RestoredQueueContinuesTheDriversRing) {
  RunSomeWork();
  const VirtioDeviceSnapshot state = Save();
  Restored restored(memory_, metrics_);
  ASSERT_TRUE(restored.transport->RestoreState(state).ok());
  const testing::FakeBuffer buffer{0x9000, 16, true};
  const std::uint16_t head = queue0_.AddChain(std::span(&buffer, 1));

  Queue& queue = *restored.device->queues[0];
  auto chain = queue.Pop();
  ASSERT_TRUE(chain.ok() && chain->has_value());
  EXPECT_EQ((*chain)->head, head);
  queue.AddUsed(head, 4);
  EXPECT_EQ(queue0_.UsedIdx(), 2);
}

TEST_F(MmioSnapshotTest, RestoreSignalsEveryEnabledQueueAndThePendingInterrupt) {
  RunSomeWork();
  const VirtioDeviceSnapshot state = Save();
  Restored restored(memory_, metrics_);
  ASSERT_TRUE(restored.transport->RestoreState(state).ok());
  EXPECT_TRUE(Readable(restored.transport->queue_event(0)));
  EXPECT_TRUE(Readable(restored.transport->queue_event(1)));
  EXPECT_TRUE(Readable(restored.transport->irqfd()));
}

TEST_F(MmioSnapshotTest, RestoreMidNegotiationLetsTheDriverFinish) {
  driver_->Write32(kStatus, kStatusAcknowledge);
  driver_->Write32(kStatus, kAckDriver);
  driver_->WriteDriverFeatures(FeatureBit(kFeatureVersion1));
  driver_->Write32(kStatus, kAckDriverFeatures);
  driver_->SetUpQueue(0, queue0_.layout());
  const VirtioDeviceSnapshot state = Save();
  Restored restored(memory_, metrics_);

  ASSERT_TRUE(restored.transport->RestoreState(state).ok());
  EXPECT_FALSE(restored.device->activated);
  EXPECT_FALSE(Readable(restored.transport->queue_event(0)));
  restored.driver->SetUpQueue(1, queue1_.layout());
  restored.driver->Write32(kStatus, kAckDriverFeatures | kStatusDriverOk);

  EXPECT_TRUE(restored.device->activated);
  EXPECT_EQ(restored.device->queues_enabled, (std::vector<bool>{true, true}));
}

TEST_F(MmioSnapshotTest, RestoreOfADeviceThatNeededResetLeavesItStopped) {
  RunSomeWork();
  device_->signals->MarkNeedsReset();
  const VirtioDeviceSnapshot state = Save();
  Restored restored(memory_, metrics_);

  ASSERT_TRUE(restored.transport->RestoreState(state).ok());

  EXPECT_FALSE(restored.device->activated);
  EXPECT_NE(restored.driver->Read32(kStatus) & kStatusNeedsReset, 0u);
  // The driver's reset and re-probe bring it back.
  ASSERT_TRUE(restored.driver
                  ->Initialize(FeatureBit(kFeatureVersion1), {queue0_.layout(), queue1_.layout()})
                  .ok());
  EXPECT_TRUE(restored.device->activated);
}

// Each mismatch is refused and leaves the new transport as freshly created.
class MmioSnapshotMismatchTest : public MmioSnapshotTest {
 protected:
  void ExpectRefused(const VirtioDeviceSnapshot& state) {
    Restored restored(memory_, metrics_);
    const absl::Status status = restored.transport->RestoreState(state);
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
    EXPECT_FALSE(restored.device->activated);
    EXPECT_EQ(restored.driver->Read32(kStatus), 0u);
    EXPECT_EQ(restored.driver->Read32(kInterruptStatus), 0u);
    EXPECT_EQ(restored.driver->Read32(kConfigGeneration), 0u);
    EXPECT_FALSE(Readable(restored.transport->queue_event(0)));
    EXPECT_FALSE(Readable(restored.transport->irqfd()));
    // Still usable: a driver can probe it from scratch.
    EXPECT_TRUE(restored.driver
                    ->Initialize(FeatureBit(kFeatureVersion1), {queue0_.layout(), queue1_.layout()})
                    .ok());
  }
};

TEST_F(MmioSnapshotMismatchTest, AnotherDeviceTypeIsRefused) {
  RunSomeWork();
  VirtioDeviceSnapshot state = Save();
  state.device_id = 2;
  ExpectRefused(state);
}

TEST_F(MmioSnapshotMismatchTest, AnotherDeviceNameIsRefused) {
  RunSomeWork();
  VirtioDeviceSnapshot state = Save();
  state.name = "block_rootfs";
  ExpectRefused(state);
}

TEST_F(MmioSnapshotMismatchTest, AnotherQueueCountIsRefused) {
  RunSomeWork();
  VirtioDeviceSnapshot state = Save();
  state.queues.pop_back();
  ExpectRefused(state);
}

TEST_F(MmioSnapshotMismatchTest, QueueLayoutOutsideGuestMemoryIsRefused) {
  RunSomeWork();
  VirtioDeviceSnapshot state = Save();
  state.queues[1].device_addr = kMemSize - 16;
  ExpectRefused(state);
}

TEST_F(MmioSnapshotMismatchTest, QueueLargerThanTheDeviceAllowsIsRefused) {
  RunSomeWork();
  VirtioDeviceSnapshot state = Save();
  state.queues[1].size = 16;  // queue 1's maximum is 8
  ExpectRefused(state);
}

TEST_F(MmioSnapshotMismatchTest, PositionBeyondSixteenBitsIsRefused) {
  RunSomeWork();
  VirtioDeviceSnapshot state = Save();
  state.queues[0].next_avail = 0x10000;
  ExpectRefused(state);
}

TEST_F(MmioSnapshotMismatchTest, FeaturesTheDeviceDoesNotOfferAreRefused) {
  RunSomeWork();
  VirtioDeviceSnapshot state = Save();
  state.driver_features |= FeatureBit(40);
  ExpectRefused(state);
}

TEST_F(MmioSnapshotMismatchTest, UnknownStatusBitsAreRefused) {
  RunSomeWork();
  VirtioDeviceSnapshot state = Save();
  state.status |= 0x10;
  ExpectRefused(state);
}

// The driver could finish it by setting FEATURES_OK, and the device would read running
// without ever having been activated.
TEST_F(MmioSnapshotMismatchTest, DriverOkWithoutFeaturesOkIsRefused) {
  VirtioDeviceSnapshot state = Save();
  state.status = kAckDriver | kStatusDriverOk;
  ExpectRefused(state);
}

TEST_F(MmioSnapshotMismatchTest, DeviceRefusingActivationIsRefused) {
  RunSomeWork();
  const VirtioDeviceSnapshot state = Save();
  Restored restored(memory_, metrics_);
  restored.device->activate_result = absl::FailedPreconditionError("no");
  EXPECT_TRUE(absl::IsInvalidArgument(restored.transport->RestoreState(state)));
  EXPECT_EQ(restored.driver->Read32(kStatus), 0u);
}

TEST_F(MmioSnapshotMismatchTest, DeviceSpecificStateForADeviceWithoutAnyIsRefused) {
  RunSomeWork();
  const VirtioDeviceSnapshot state = Save();
  Restored restored(memory_, metrics_);
  restored.device->snapshots = false;  // the default RestoreDeviceSpecific
  EXPECT_TRUE(absl::IsInvalidArgument(restored.transport->RestoreState(state)));
  EXPECT_FALSE(restored.device->activated);
  EXPECT_EQ(restored.device->resets, 1);
}

TEST_F(MmioSnapshotTest, RestoreIntoATransportTheDriverUsedFails) {
  RunSomeWork();
  const VirtioDeviceSnapshot state = Save();
  const absl::Status status = transport_->RestoreState(state);
  EXPECT_TRUE(absl::IsFailedPrecondition(status)) << status;
  EXPECT_TRUE(device_->activated);  // untouched
}

}  // namespace
}  // namespace ember::virtio
