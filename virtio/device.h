#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "virtio/device_state.h"
#include "virtio/queue.h"
#include "vmm/base/guest_memory.h"

namespace ember::virtio {

// What a device may ask of the transport it sits behind (implemented by MmioTransport).
// Every method is lock-free and may be called from any thread, typically the VMM loop thread
// while the device processes a queue.
class DeviceSignals {
 public:
  virtual ~DeviceSignals() = default;
  // Raises the used-buffer interrupt: InterruptStatus bit 0, then the irqfd.
  virtual void SignalUsedBuffer() = 0;
  // Raises the configuration-change interrupt (InterruptStatus bit 1).
  virtual void SignalConfigChange() = 0;
  // The driver broke the protocol (a malformed chain, say): sets DEVICE_NEEDS_RESET in the
  // status and raises a configuration-change interrupt (spec 2.1.2). The device stops
  // processing until the driver resets it.
  virtual void MarkNeedsReset() = 0;
};

// What the transport hands a device when the driver sets DRIVER_OK. The device takes
// ownership of the queues; `memory` and `signals` are borrowed and outlive the activation.
struct ActivationContext {
  const base::GuestMemory* memory = nullptr;
  DeviceSignals* signals = nullptr;
  std::uint64_t features = 0;  // negotiated: offered by the device and accepted by the driver
  // One entry per device queue; nullopt for a queue the driver left disabled.
  std::vector<std::optional<Queue>> queues;
};

// Where the device stands in one activated queue's rings, for snapshots (Queue::next_avail,
// Queue::next_used).
struct QueuePositions {
  std::uint16_t next_avail = 0;
  std::uint16_t next_used = 0;
};

// An fd the VMM loop watches for a device, and what to call (on the loop thread) when it
// becomes readable. The fd is owned by the device and stays open as long as the device.
// An edge-triggered source is one the device never drains (io_uring's completion eventfd,
// signalled by every completion even when the device reaps them inline, where draining would
// cost a system call per batch): the loop must watch it with EPOLLET, so that every signal
// wakes it once, and a level-triggered watcher must drain it itself.
struct EventSource {
  int fd = -1;
  std::function<void()> on_readable;
  bool edge_triggered = false;
};

// A virtio device model (block, net, vsock) behind a transport. The transport owns the
// device and calls the methods below on the threads noted; the device guards its own state,
// because register accesses (vCPU threads) and queue processing (the VMM loop thread) race.
class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;

  // Constant for the device's life; any thread.
  [[nodiscard]] virtual std::uint32_t device_id() const = 0;
  [[nodiscard]] virtual std::uint64_t offered_features() const = 0;
  [[nodiscard]] virtual std::span<const std::uint16_t> queue_max_sizes() const = 0;
  // Names the device in logs and metric groups ("block_rootfs").
  [[nodiscard]] virtual std::string name() const = 0;

  // Device configuration space, `offset` relative to its start; bytes past its end read as
  // zero and writes to them are ignored. vCPU thread. WriteConfig returns whether the device
  // took the write: false for fields the negotiated features leave read-only (a driver must
  // not write them), which the transport counts.
  virtual void ReadConfig(std::uint64_t offset, std::span<std::uint8_t> data) const = 0;
  [[nodiscard]] virtual bool WriteConfig(std::uint64_t offset,
                                         std::span<const std::uint8_t> data) = 0;

  // The driver set DRIVER_OK. An error (a required queue missing, say) makes the transport
  // set DEVICE_NEEDS_RESET. vCPU thread.
  [[nodiscard]] virtual absl::Status Activate(ActivationContext context) = 0;
  // The driver wrote 0 to Status: drop the queues and forget the activation. vCPU thread.
  virtual void Reset() = 0;
  // The driver notified queue `index` (the transport already consumed the ioeventfd).
  // VMM loop thread.
  virtual void ProcessQueue(std::size_t index) = 0;
  // Extra fds the VMM loop must watch for this device (io_uring completions, rate-limiter
  // timers). Called once while wiring the VM, before the guest runs.
  [[nodiscard]] virtual std::vector<EventSource> EventSources() { return {}; }

  // Snapshot support. The transport calls these from MmioTransport::SaveState (VMM loop
  // thread, every vCPU paused) and RestoreState (before any vCPU runs). The defaults suit a
  // device that has no queues activated or nothing to save; a device that holds queues must
  // override SaveQueuePositions, or snapshots of it fail.
  //
  // Finishes the work the device has started (I/O in flight in the host) and writes its used
  // entries, so that guest memory and the state below stop changing until the device is next
  // notified. An error means the state would be inconsistent; the snapshot must fail.
  [[nodiscard]] virtual absl::Status Quiesce() { return absl::OkStatus(); }
  // While activated: one entry per device queue, the positions of each queue the device
  // holds (nullopt for a queue the driver left disabled). Empty when not activated.
  [[nodiscard]] virtual std::vector<std::optional<QueuePositions>> SaveQueuePositions() const {
    return {};
  }
  // The device's own state that the configuration does not already determine (rate-limiter
  // buckets, say), as its alternative of DeviceState.
  [[nodiscard]] virtual DeviceState SaveDeviceState() const { return {}; }
  // Takes back what SaveDeviceState returned, after the transport has re-activated the
  // device (when the snapshot had it activated). An error (the state of another kind of
  // device, say) rejects the snapshot.
  [[nodiscard]] virtual absl::Status RestoreDeviceState(const DeviceState& state) {
    return std::holds_alternative<std::monostate>(state)
               ? absl::OkStatus()
               : absl::InvalidArgumentError(name() + ": device state for a device that has none");
  }
};

}  // namespace ember::virtio
