#include "virtio/mmio/mmio_transport.h"

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "virtio/mmio/registers.h"
#include "virtio/spec.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"

namespace ember::virtio {
namespace {

using namespace mmio;  // the register map
static_assert(kQueueNotify == MmioTransport::kQueueNotifyOffset);

constexpr std::uint32_t kDriverStatusBits =
    kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk | kStatusFailed;

constexpr std::uint32_t kActivatedBits = kStatusFeaturesOk | kStatusDriverOk;

// Whether a device with this status holds its queues: DRIVER_OK was granted (WriteStatus
// grants it only with FEATURES_OK, and activates then), and no error has stopped it since.
bool IsActivated(std::uint32_t status) {
  return (status & kActivatedBits) == kActivatedBits && (status & kStatusNeedsReset) == 0;
}

// Whether each driver bit in `status` comes with its predecessor in the initialization
// sequence (spec 3.1.1): DRIVER after ACKNOWLEDGE, FEATURES_OK after DRIVER, DRIVER_OK after
// FEATURES_OK. FAILED may come at any point.
bool IsOrdered(std::uint32_t status) {
  auto has = [status](std::uint32_t bit) { return (status & bit) != 0; };
  return (!has(kStatusDriver) || has(kStatusAcknowledge)) &&
         (!has(kStatusFeaturesOk) || has(kStatusDriver)) &&
         (!has(kStatusDriverOk) || has(kStatusFeaturesOk));
}

void SetLow(std::uint64_t* field, std::uint32_t value) {
  *field = (*field & ~std::uint64_t{0xffffffff}) | value;
}
void SetHigh(std::uint64_t* field, std::uint32_t value) {
  *field = (*field & 0xffffffff) | (std::uint64_t{value} << 32);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MmioTransport>> MmioTransport::Create(
    const base::GuestMemory& memory, std::unique_ptr<VirtioDevice> device, base::EventFd irqfd,
    base::MetricsRegistry& metrics) {
  std::vector<base::EventFd> events;
  for (std::size_t i = 0; i < device->queue_max_sizes().size(); ++i) {
    EMBER_ASSIGN_OR_RETURN(base::EventFd event, base::EventFd::Create());
    events.push_back(std::move(event));
  }
  return std::unique_ptr<MmioTransport>(
      new MmioTransport(memory, std::move(device), std::move(irqfd), std::move(events), metrics));
}

MmioTransport::MmioTransport(const base::GuestMemory& memory,
                             std::unique_ptr<VirtioDevice> device, base::EventFd irqfd,
                             std::vector<base::EventFd> queue_events,
                             base::MetricsRegistry& metrics)
    : memory_(memory),
      device_(std::move(device)),
      irqfd_(std::move(irqfd)),
      queue_events_(std::move(queue_events)),
      queue_max_sizes_(device_->queue_max_sizes().begin(), device_->queue_max_sizes().end()),
      invalid_accesses_(metrics.Get("mmio_" + device_->name(), "invalid_register_access")),
      activate_fails_(metrics.Get("mmio_" + device_->name(), "activate_fails")),
      needs_reset_(metrics.Get("mmio_" + device_->name(), "needs_reset")),
      features_refused_(metrics.Get("mmio_" + device_->name(), "features_refused")),
      config_writes_refused_(metrics.Get("mmio_" + device_->name(), "config_writes_refused")),
      queues_(queue_max_sizes_.size()) {}

void MmioTransport::Read(std::uint64_t offset, std::span<std::uint8_t> data) {
  std::memset(data.data(), 0, data.size());
  if (offset >= kConfig) {
    std::lock_guard lock(mu_);
    device_->ReadConfig(offset - kConfig, data);
    return;
  }
  // Control registers are 32 bits wide and only 32-bit aligned accesses are allowed
  // (spec 4.2.2.2); anything else reads as zero.
  if (data.size() != 4 || offset % 4 != 0) {
    invalid_accesses_->Add();
    return;
  }
  const std::uint32_t value = ReadRegister(offset);
  std::memcpy(data.data(), &value, sizeof(value));
}

void MmioTransport::Write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (offset >= kConfig) {
    std::lock_guard lock(mu_);
    if (!device_->WriteConfig(offset - kConfig, data)) config_writes_refused_->Add();
    return;
  }
  if (data.size() != 4 || offset % 4 != 0) {
    invalid_accesses_->Add();
    return;
  }
  std::uint32_t value;
  std::memcpy(&value, data.data(), sizeof(value));
  WriteRegister(offset, value);
}

MmioTransport::QueueRegisters* MmioTransport::SelectedQueue() {
  return queue_sel_ < queues_.size() ? &queues_[queue_sel_] : nullptr;
}

std::uint32_t MmioTransport::ReadRegister(std::uint64_t offset) {
  switch (offset) {
    case kMagicValue:
      return kMagic;
    case kVersion:
      return kVersion2;
    case kDeviceId:
      return device_->device_id();
    case mmio::kVendorId:
      return MmioTransport::kVendorId;
    case kInterruptStatus:
      return interrupt_status_.load();
    case kStatus:
      return status_.load();
    case kConfigGeneration:
      return config_generation_.load();
    default:
      break;
  }
  std::lock_guard lock(mu_);
  const QueueRegisters* queue = SelectedQueue();
  switch (offset) {
    case kDeviceFeatures: {
      const std::uint64_t features = device_->offered_features();
      if (device_features_sel_ == 0) return static_cast<std::uint32_t>(features);
      if (device_features_sel_ == 1) return static_cast<std::uint32_t>(features >> 32);
      return 0;
    }
    case kQueueNumMax:
      return queue ? queue_max_sizes_[queue_sel_] : 0;
    case kQueueNum:
      return queue ? queue->layout.size : 0;
    case kQueueReady:
      return queue && queue->ready ? 1 : 0;
    case kQueueDescLow:
      return queue ? static_cast<std::uint32_t>(queue->layout.desc_table) : 0;
    case kQueueDescHigh:
      return queue ? static_cast<std::uint32_t>(queue->layout.desc_table >> 32) : 0;
    case kQueueDriverLow:
      return queue ? static_cast<std::uint32_t>(queue->layout.avail_ring) : 0;
    case kQueueDriverHigh:
      return queue ? static_cast<std::uint32_t>(queue->layout.avail_ring >> 32) : 0;
    case kQueueDeviceLow:
      return queue ? static_cast<std::uint32_t>(queue->layout.used_ring) : 0;
    case kQueueDeviceHigh:
      return queue ? static_cast<std::uint32_t>(queue->layout.used_ring >> 32) : 0;
    default:
      break;
  }
  // No shared-memory regions: their length and base read as -1 (spec 4.2.2).
  if (offset >= kShmLenLow && offset <= kShmBaseHigh) return 0xffffffff;
  return 0;
}

void MmioTransport::WriteRegister(std::uint64_t offset, std::uint32_t value) {
  switch (offset) {
    case kQueueNotify:
      // Normally an ioeventfd catches this write in the kernel; when one reaches us anyway
      // (no ioeventfd registered), take the same path.
      if (value < queue_events_.size()) {
        queue_events_[value].Signal();
      } else {
        invalid_accesses_->Add();
      }
      return;
    case kInterruptAck:
      interrupt_status_.fetch_and(~value);
      return;
    default:
      break;
  }
  std::lock_guard lock(mu_);
  const std::uint32_t status = status_.load();
  switch (offset) {
    case kDeviceFeaturesSel:
      device_features_sel_ = value;
      return;
    case kDriverFeaturesSel:
      driver_features_sel_ = value;
      return;
    case kDriverFeatures:
      // Features are accepted only between DRIVER and FEATURES_OK (spec 3.1.1).
      if ((status & kStatusDriver) == 0 || (status & kStatusFeaturesOk) != 0 ||
          driver_features_sel_ > 1) {
        invalid_accesses_->Add();
        return;
      }
      if (driver_features_sel_ == 0) {
        SetLow(&driver_features_, value);
      } else {
        SetHigh(&driver_features_, value);
      }
      return;
    case kQueueSel:
      queue_sel_ = value;
      return;
    case kShmSel:
      shm_sel_ = value;
      return;
    case kStatus:
      WriteStatus(value);
      return;
    default:
      WriteQueueRegister(offset, value);
      return;
  }
}

void MmioTransport::WriteQueueRegister(std::uint64_t offset, std::uint32_t value) {
  const std::uint32_t status = status_.load();
  QueueRegisters* queue = SelectedQueue();
  // Queues are configured after FEATURES_OK and before DRIVER_OK (spec 3.1.1), and a queue's
  // layout is frozen while it is enabled (spec 4.2.3.2).
  const bool configurable = queue != nullptr && (status & kStatusFeaturesOk) != 0 &&
                            (status & kStatusDriverOk) == 0;
  if (!configurable || (queue->ready && offset != kQueueReady)) {
    invalid_accesses_->Add();
    return;
  }
  switch (offset) {
    case kQueueNum:
      // A size that does not fit 16 bits becomes 0, which activation rejects.
      queue->layout.size = value > 0xffff ? 0 : static_cast<std::uint16_t>(value);
      return;
    case kQueueReady:
      queue->ready = value == 1;
      return;
    case kQueueDescLow:
      SetLow(&queue->layout.desc_table, value);
      return;
    case kQueueDescHigh:
      SetHigh(&queue->layout.desc_table, value);
      return;
    case kQueueDriverLow:
      SetLow(&queue->layout.avail_ring, value);
      return;
    case kQueueDriverHigh:
      SetHigh(&queue->layout.avail_ring, value);
      return;
    case kQueueDeviceLow:
      SetLow(&queue->layout.used_ring, value);
      return;
    case kQueueDeviceHigh:
      SetHigh(&queue->layout.used_ring, value);
      return;
    default:
      invalid_accesses_->Add();  // read-only or unknown register
      return;
  }
}

void MmioTransport::WriteStatus(std::uint32_t value) {
  if (value == 0) {
    ResetLocked();
    return;
  }
  const std::uint32_t old = status_.load();
  const std::uint32_t requested = value & kDriverStatusBits;
  // The driver only ever adds bits (spec 3.1.1), each after its predecessor; anything else
  // is ignored, leaving the status the driver reads back unchanged.
  const bool adds_only = (requested & (old & kDriverStatusBits)) == (old & kDriverStatusBits) &&
                         value == (value & (kDriverStatusBits | kStatusNeedsReset));
  if (!adds_only || !IsOrdered(requested)) {
    invalid_accesses_->Add();
    return;
  }
  const std::uint32_t added = requested & ~old;
  if (added == 0) return;
  // A driver that gave up (FAILED) must reset before it tries again, and so must one whose
  // device needs a reset (spec 2.1.1): until then only FAILED itself is taken, even from a
  // write that also sets DRIVER_OK, so that no device is activated behind a dead driver.
  if ((requested & kStatusFailed) != 0 || (old & kStatusNeedsReset) != 0) {
    if ((added & ~kStatusFailed) != 0) invalid_accesses_->Add();
    if ((added & kStatusFailed) != 0) status_.fetch_or(kStatusFailed);
    return;
  }
  std::uint32_t granted = requested;
  if ((added & kStatusFeaturesOk) != 0 && !FeaturesAcceptable()) {
    // Leaving FEATURES_OK clear tells the driver the device rejects its features (spec
    // 2.2.2); DRIVER_OK in the same write falls with it, since it needs FEATURES_OK.
    EMBER_LOG(kWarn) << device_->name() << ": driver features 0x" << std::hex
                     << driver_features_ << " refused (VIRTIO_F_VERSION_1 is required and "
                     << "only the offered 0x" << device_->offered_features() << " may be set)";
    granted &= ~(kStatusFeaturesOk | kStatusDriverOk);
    features_refused_->Add();
  }
  status_.fetch_or(granted);
  if ((added & granted & kStatusDriverOk) != 0 && !Activate()) {
    activate_fails_->Add();
    MarkNeedsReset();
  }
}

bool MmioTransport::FeaturesAcceptable() const {
  const std::uint64_t unknown = driver_features_ & ~device_->offered_features();
  return unknown == 0 && (driver_features_ & FeatureBit(kFeatureVersion1)) != 0;
}

absl::StatusOr<ActivationContext> MmioTransport::MakeActivationContext() {
  ActivationContext context;
  context.memory = &memory_;
  context.signals = this;
  context.features = driver_features_;
  for (std::size_t i = 0; i < queues_.size(); ++i) {
    if (!queues_[i].ready) {
      context.queues.emplace_back(std::nullopt);
      continue;
    }
    auto queue = Queue::Create(memory_, queues_[i].layout, queue_max_sizes_[i], driver_features_);
    if (!queue.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("queue ", i, ": ", queue.status().message()));
    }
    context.queues.emplace_back(std::move(queue).value());
  }
  return context;
}

bool MmioTransport::Activate() {
  absl::StatusOr<ActivationContext> context = MakeActivationContext();
  if (!context.ok()) {
    EMBER_LOG(kWarn) << device_->name() << ": " << context.status().message();
    return false;
  }
  absl::Status status = device_->Activate(std::move(context).value());
  if (!status.ok()) {
    EMBER_LOG(kWarn) << device_->name() << ": activation failed: " << status;
    return false;
  }
  return true;
}

absl::Status MmioTransport::Quiesce() { return device_->Quiesce(); }

absl::StatusOr<VirtioDeviceSnapshot> MmioTransport::SaveState() {
  std::lock_guard lock(mu_);
  // First: completions still raise interrupts and move the used index.
  EMBER_RETURN_IF_ERROR(device_->Quiesce());
  VirtioDeviceSnapshot state;
  state.device_id = device_->device_id();
  state.name = device_->name();
  state.status = status_.load();
  state.driver_features = driver_features_;
  state.device_features_sel = device_features_sel_;
  state.driver_features_sel = driver_features_sel_;
  state.queue_sel = queue_sel_;
  state.interrupt_status = interrupt_status_.load();
  state.config_generation = config_generation_.load();

  const std::vector<std::optional<QueuePositions>> positions = device_->SaveQueuePositions();
  if (!positions.empty() && positions.size() != queues_.size()) {
    return absl::InternalError(absl::StrCat(device_->name(), " reported positions for ",
                                            positions.size(), " queues; it has ", queues_.size()));
  }
  const bool activated = IsActivated(state.status);
  if (activated && positions.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(device_->name(), " does not support snapshots (no queue positions)"));
  }
  for (std::size_t i = 0; i < queues_.size(); ++i) {
    const QueueRegisters& registers = queues_[i];
    VirtqueueSnapshot& queue = state.queues.emplace_back();
    queue.size = registers.layout.size;
    queue.ready = registers.ready;
    queue.desc_addr = registers.layout.desc_table;
    queue.driver_addr = registers.layout.avail_ring;
    queue.device_addr = registers.layout.used_ring;
    if (!activated) continue;
    if (registers.ready != positions[i].has_value()) {
      return absl::InternalError(absl::StrCat(device_->name(), " holds queue ", i, " ",
                                              registers.ready ? "not " : "",
                                              "enabled by the driver"));
    }
    if (positions[i]) {
      queue.next_avail = positions[i]->next_avail;
      queue.next_used = positions[i]->next_used;
    }
  }
  state.device = device_->SaveDeviceState();
  return state;
}

absl::Status MmioTransport::RestoreState(const VirtioDeviceSnapshot& state) {
  std::lock_guard lock(mu_);
  if (status_.load() != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(device_->name(), ": restoring into a transport the driver already used"));
  }
  absl::Status status = RestoreLocked(state);
  if (!status.ok()) {
    ResetLocked();
    config_generation_.store(0);
    return status;
  }
  // Work and interrupts the old process may have had pending; extra ones are harmless.
  if (IsActivated(state.status)) {
    for (std::size_t i = 0; i < queues_.size(); ++i) {
      if (queues_[i].ready) queue_events_[i].Signal();
    }
  }
  if (state.interrupt_status != 0) irqfd_.Signal();
  return absl::OkStatus();
}

absl::Status MmioTransport::RestoreLocked(const VirtioDeviceSnapshot& state) {
  auto invalid = [this](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("snapshot of ", device_->name(), ": ", what));
  };
  if (state.device_id != device_->device_id()) {
    return invalid(
        absl::StrCat("device id ", state.device_id, ", this device is ", device_->device_id()));
  }
  if (state.name != device_->name()) {
    return invalid(absl::StrCat("saved from device \"", state.name, "\""));
  }
  if (state.queues.size() != queues_.size()) {
    return invalid(absl::StrCat(state.queues.size(), " queues, the device has ", queues_.size()));
  }
  if ((state.status & ~(kDriverStatusBits | kStatusNeedsReset)) != 0) {
    return invalid(absl::StrCat("unknown status bits in 0x", absl::Hex(state.status)));
  }
  // A status no driver could have reached (DRIVER_OK without FEATURES_OK, say) would let
  // the driver complete it later without the device ever being activated.
  if (!IsOrdered(state.status)) {
    return invalid(absl::StrCat("status 0x", absl::Hex(state.status),
                                " sets a bit without its predecessor"));
  }
  const std::uint64_t unknown = state.driver_features & ~device_->offered_features();
  if (unknown != 0) {
    return invalid(absl::StrCat("features 0x", absl::Hex(unknown), " the device does not offer"));
  }
  for (std::size_t i = 0; i < state.queues.size(); ++i) {
    const VirtqueueSnapshot& queue = state.queues[i];
    if (queue.size > 0xffff || queue.next_avail > 0xffff || queue.next_used > 0xffff) {
      return invalid(absl::StrCat("queue ", i, ": size or position beyond 16 bits"));
    }
  }

  driver_features_ = state.driver_features;
  device_features_sel_ = state.device_features_sel;
  driver_features_sel_ = state.driver_features_sel;
  queue_sel_ = state.queue_sel;
  for (std::size_t i = 0; i < queues_.size(); ++i) {
    const VirtqueueSnapshot& queue = state.queues[i];
    queues_[i].layout = QueueLayout{static_cast<std::uint16_t>(queue.size), queue.desc_addr,
                                    queue.driver_addr, queue.device_addr};
    queues_[i].ready = queue.ready;
  }

  if (IsActivated(state.status)) {
    // What Activate does for the driver's DRIVER_OK, plus the saved ring positions.
    absl::StatusOr<ActivationContext> context = MakeActivationContext();
    if (!context.ok()) return invalid(std::string(context.status().message()));
    for (std::size_t i = 0; i < queues_.size(); ++i) {
      if (!context->queues[i]) continue;
      context->queues[i]->RestorePositions(static_cast<std::uint16_t>(state.queues[i].next_avail),
                                           static_cast<std::uint16_t>(state.queues[i].next_used));
    }
    if (absl::Status activated = device_->Activate(std::move(context).value()); !activated.ok()) {
      return invalid(absl::StrCat("activation refused: ", activated.message()));
    }
  }
  status_.store(state.status);
  interrupt_status_.store(state.interrupt_status);
  config_generation_.store(state.config_generation);
  if (absl::Status restored = device_->RestoreDeviceState(state.device); !restored.ok()) {
    return invalid(absl::StrCat("device state refused: ", restored.message()));
  }
  return absl::OkStatus();
}

void MmioTransport::ResetLocked() {
  device_->Reset();
  device_features_sel_ = 0;
  driver_features_sel_ = 0;
  driver_features_ = 0;
  queue_sel_ = 0;
  shm_sel_ = 0;
  for (QueueRegisters& queue : queues_) queue = QueueRegisters{};
  interrupt_status_.store(0);
  status_.store(0);
}

void MmioTransport::HandleQueueEvent(std::size_t index) {
  queue_events_[index].Consume();
  device_->ProcessQueue(index);
}

void MmioTransport::ProcessQueueNotification(std::size_t index) { device_->ProcessQueue(index); }

void MmioTransport::SignalUsedBuffer() {
  interrupt_status_.fetch_or(kInterruptUsedBuffer);
  irqfd_.Signal();
}

void MmioTransport::SignalConfigChange() {
  config_generation_.fetch_add(1);
  interrupt_status_.fetch_or(kInterruptConfigChange);
  irqfd_.Signal();
}

void MmioTransport::MarkNeedsReset() {
  needs_reset_->Add();
  status_.fetch_or(kStatusNeedsReset);
  // Not SignalConfigChange: the configuration itself did not change.
  interrupt_status_.fetch_or(kInterruptConfigChange);
  irqfd_.Signal();
}

}  // namespace ember::virtio
