#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "virtio/device.h"
#include "vmm/base/bus_device.h"
#include "vmm/base/event_fd.h"
#include "vmm/base/guest_memory.h"
#include "vmm/base/metrics.h"

namespace ember::virtio {

// One queue's registers and, when the device was activated, its ring positions. Plain data
// whose fields mirror ember.v1.VirtqueueState field for field (same names and widths);
// mmio/state_proto.h converts, so that the devices stay free of protobuf (DESIGN's dependency
// rule). Untrusted on restore: RestoreState checks every value.
struct VirtqueueSnapshot {
  std::uint32_t size = 0;
  bool ready = false;
  std::uint64_t desc_addr = 0;
  std::uint64_t driver_addr = 0;  // available ring
  std::uint64_t device_addr = 0;  // used ring
  std::uint32_t next_avail = 0;   // meaningful when the device was activated
  std::uint32_t next_used = 0;
};

// A transport and the device behind it, mirroring ember.v1.VirtioDeviceState: `name` is its
// id, `device_id` its type, `device` the device's own state (DeviceState).
struct VirtioDeviceSnapshot {
  std::uint32_t device_id = 0;
  std::string name;
  std::uint32_t status = 0;
  std::uint64_t driver_features = 0;
  std::uint32_t device_features_sel = 0;
  std::uint32_t driver_features_sel = 0;
  std::uint32_t queue_sel = 0;
  std::uint32_t interrupt_status = 0;
  std::uint32_t config_generation = 0;
  std::vector<VirtqueueSnapshot> queues;  // one per device queue
  DeviceState device;                     // VirtioDevice::SaveDeviceState
};

// The modern (version 2) virtio-mmio transport (spec 4.2) in front of one VirtioDevice.
//
// Wiring (done once by the VMM before the guest runs):
//  - Map the transport on the MMIO bus at a 4 KiB window (kWindowSize) and announce it to
//    Linux as "virtio_mmio.device=4K@<base>:<irq>".
//  - For each queue i, register queue_event(i) as a KVM ioeventfd on base + kQueueNotifyOffset,
//    4 bytes, datamatch i, and watch it in the VMM loop calling HandleQueueEvent(i).
//  - Bind irqfd() to the device's GSI with KVM_IRQFD.
//  - Watch every entry of device().EventSources() in the loop.
// Register accesses arrive on vCPU threads through Read/Write; queue processing runs on the
// VMM loop thread. The transport's register state is guarded by mu_; InterruptStatus and
// Status are atomics so that the device can raise interrupts and NEEDS_RESET from the loop
// thread without taking mu_ (which vCPU threads hold while calling into the device).
class MmioTransport final : public base::BusDevice, private DeviceSignals {
 public:
  static constexpr std::uint64_t kWindowSize = 0x1000;
  static constexpr std::uint64_t kQueueNotifyOffset = 0x50;
  static constexpr std::uint32_t kVendorId = 0x52424d45;  // "EMBR"

  // Takes ownership of `device` and of `irqfd`, which the VMM binds to a GSI; borrows
  // `memory` and `metrics`, which outlive the transport. Metrics go to group
  // "mmio_<device name>".
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<MmioTransport>> Create(
      const base::GuestMemory& memory, std::unique_ptr<VirtioDevice> device,
      base::EventFd irqfd, base::MetricsRegistry& metrics = base::MetricsRegistry::Global());

  // base::BusDevice; vCPU threads.
  void Read(std::uint64_t offset, std::span<std::uint8_t> data) override;
  void Write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

  // Consumes queue_event(index) and lets the device process the queue. VMM loop thread.
  void HandleQueueEvent(std::size_t index);
  // Lets the device process queue `index` for a queue_event(index) watched edge-triggered, as
  // ember-vmm's loop watches it, without reading the eventfd: every notification raises a new
  // edge whatever count the eventfd holds, so it never needs draining, and a read per
  // wake-up would be one more system call per batch. VMM loop thread.
  void ProcessQueueNotification(std::size_t index);

  [[nodiscard]] std::size_t num_queues() const { return queue_events_.size(); }
  // Owned by the transport; borrowed by the VMM for ioeventfd/irqfd registration.
  [[nodiscard]] const base::EventFd& queue_event(std::size_t index) const {
    return queue_events_[index];
  }
  [[nodiscard]] const base::EventFd& irqfd() const { return irqfd_; }
  [[nodiscard]] VirtioDevice& device() { return *device_; }
  // Current Status register; any thread.
  [[nodiscard]] std::uint32_t status() const { return status_.load(); }

  // Snapshots. Both take mu_, then the device's lock.
  //
  // Lets the device finish its started work (VirtioDevice::Quiesce: in-flight io_uring
  // requests complete and their used entries are written). VMM loop thread, vCPUs paused.
  [[nodiscard]] absl::Status Quiesce();
  // Quiesces the device, then reads the registers and the device's queue positions and
  // device-specific state. VMM loop thread, every vCPU paused; guest memory must be saved
  // after this call and before the loop dispatches any other event of this device (a
  // rate-limiter timer would start new requests). Errors: quiescing failed, or the device is
  // activated but cannot report its queue positions (no snapshot support).
  [[nodiscard]] absl::StatusOr<VirtioDeviceSnapshot> SaveState();
  // Puts a freshly created transport (the same device configuration, over guest memory
  // restored from the snapshot) into the state `state` describes. When the driver had set
  // DRIVER_OK (and the device did not need a reset), rebuilds the queues from their saved
  // layouts and positions and activates the device as DRIVER_OK would; then hands the
  // device its device-specific state; then signals every enabled queue's queue_event (a
  // notification caught by the old process's ioeventfd, or a rate-limited queue waiting for
  // its timer, would otherwise be lost) and, when InterruptStatus is non-zero, the irqfd
  // (KVM delivers an irqfd signalled before KVM_IRQFD once it is bound). The caller wires
  // the fds as for a new VM, before or after. Runs before any vCPU starts.
  // Errors, each leaving the transport as freshly created: InvalidArgument when the state does
  // not fit this device (device id or name, queue count, features not offered, a queue
  // layout the device would refuse or outside guest memory, values out of range, device
  // activation or device-specific state refused); FailedPrecondition when the transport is
  // not fresh.
  [[nodiscard]] absl::Status RestoreState(const VirtioDeviceSnapshot& state);

 private:
  struct QueueRegisters {
    QueueLayout layout;
    bool ready = false;
  };

  MmioTransport(const base::GuestMemory& memory, std::unique_ptr<VirtioDevice> device,
                base::EventFd irqfd, std::vector<base::EventFd> queue_events,
                base::MetricsRegistry& metrics);

  // DeviceSignals, for the device; any thread.
  void SignalUsedBuffer() override;
  void SignalConfigChange() override;
  void MarkNeedsReset() override;

  [[nodiscard]] std::uint32_t ReadRegister(std::uint64_t offset);
  void WriteRegister(std::uint64_t offset, std::uint32_t value);
  void WriteStatus(std::uint32_t value);
  // Whether the driver's features are a subset of the offered ones with VERSION_1.
  [[nodiscard]] bool FeaturesAcceptable() const;
  void WriteQueueRegister(std::uint64_t offset, std::uint32_t value);
  // What the device receives at DRIVER_OK: the enabled queues built from their registers.
  // InvalidArgument, naming the queue, when a layout is refused.
  [[nodiscard]] absl::StatusOr<ActivationContext> MakeActivationContext();
  // Validates the queues, hands them to the device; false when activation failed.
  bool Activate();
  // RestoreState's work, under mu_; the caller resets the transport on an error.
  [[nodiscard]] absl::Status RestoreLocked(const VirtioDeviceSnapshot& state);
  void ResetLocked();
  [[nodiscard]] QueueRegisters* SelectedQueue();

  const base::GuestMemory& memory_;
  const std::unique_ptr<VirtioDevice> device_;
  const base::EventFd irqfd_;
  const std::vector<base::EventFd> queue_events_;
  const std::vector<std::uint16_t> queue_max_sizes_;

  base::Metric* invalid_accesses_;  // register accesses that break the spec's rules
  base::Metric* activate_fails_;
  base::Metric* needs_reset_;
  base::Metric* features_refused_;       // FEATURES_OK refused: features not offered
  base::Metric* config_writes_refused_;  // writes to configuration the device keeps read-only

  std::atomic<std::uint32_t> status_{0};
  std::atomic<std::uint32_t> interrupt_status_{0};
  std::atomic<std::uint32_t> config_generation_{0};

  std::mutex mu_;
  std::uint32_t device_features_sel_ = 0;  // guarded by mu_
  std::uint32_t driver_features_sel_ = 0;  // guarded by mu_
  std::uint64_t driver_features_ = 0;      // guarded by mu_
  std::uint32_t queue_sel_ = 0;            // guarded by mu_
  std::uint32_t shm_sel_ = 0;              // guarded by mu_
  std::vector<QueueRegisters> queues_;     // guarded by mu_
};

}  // namespace ember::virtio
