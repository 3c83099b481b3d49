#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "virtio/device.h"
#include "virtio/vsock/config.h"
#include "virtio/vsock/connection.h"
#include "virtio/vsock/metrics.h"
#include "virtio/vsock/muxer.h"
#include "virtio/vsock/packet.h"
#include "vmm/base/metrics.h"

namespace ember::virtio::vsock {

// virtio-vsock (spec 5.10) with Firecracker's Unix-socket backend. Streams only.
//
// Host to guest: a host process connects to uds_path and sends "CONNECT <port>\n"; the
// device picks a host-side port, sends the guest a REQUEST, and when the guest answers
// RESPONSE writes "OK <host-side port>\n" to the host stream, which is then bridged.
// Guest to host: a REQUEST to CID 2 port P makes the device connect to "<uds_path>_<P>"; it
// answers RESPONSE, or RST when nobody listens there.
//
// Flow control follows the spec's credit scheme: the device never sends the guest more
// payload than the guest's buf_alloc - (rx_cnt - fwd_cnt) allows, and advertises
// kConnBufferSize to the guest, buffering at most that much per connection when the host
// reader is slow. Every host socket is non-blocking and watched only for what the device
// can act on, so a slow or stuck host peer holds up only its own connection. A guest that
// overruns its credit gets an RST.
//
// A malformed packet from the guest (short header, bad length, unknown op or type, wrong
// source or destination CID) is counted in vsock_<id>.malformed_packets and dropped, with an
// RST where the guest would otherwise wait for an answer; it never stops the device. A chain
// that breaks the virtqueue rules marks the device DEVICE_NEEDS_RESET.
//
// In parts: this class owns the three queues (it pops TX packets and RX buffers and fills
// the event queue); the Muxer owns the host side and the connection map; each Connection is
// one stream's state machine.
//
// Threads: ReadConfig/Activate/Reset come from vCPU threads through the transport;
// ProcessQueue, the EventSource callback and ResetAllConnections run on the VMM loop
// thread. mu_ guards everything they share, the muxer included.
class VsockDevice final : public VirtioDevice, private RxBuffers {
 public:
  // Binds the listener at config.uds_path. Errors: a CID outside [3, 2^32-2], an empty or
  // overlong path, a path that already exists, a directory that does not.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<VsockDevice>> Create(
      const VsockConfig& config, base::MetricsRegistry& metrics = base::MetricsRegistry::Global());
  // Closes every connection and removes the listener's socket file.
  ~VsockDevice() override;

  // VirtioDevice.
  [[nodiscard]] std::uint32_t device_id() const override;
  [[nodiscard]] std::uint64_t offered_features() const override;
  [[nodiscard]] std::span<const std::uint16_t> queue_max_sizes() const override {
    return queue_sizes_;
  }
  [[nodiscard]] std::string name() const override { return "vsock_" + config_.vsock_id; }
  void ReadConfig(std::uint64_t offset, std::span<std::uint8_t> data) const override;
  [[nodiscard]] bool WriteConfig(std::uint64_t offset,
                                 std::span<const std::uint8_t> data) override;
  [[nodiscard]] absl::Status Activate(ActivationContext context) override;
  void Reset() override;
  void ProcessQueue(std::size_t index) override;
  // One source: the muxer's EventSet (listener, host sockets, a wake-up eventfd).
  [[nodiscard]] std::vector<EventSource> EventSources() override;
  // Snapshots. Host sockets cannot be saved, so the device's state (VsockState) holds nothing:
  // RestoreDeviceState (on the restored, re-activated device) does what ResetAllConnections
  // does, and the guest gets VIRTIO_VSOCK_EVENT_TRANSPORT_RESET.
  [[nodiscard]] std::vector<std::optional<QueuePositions>> SaveQueuePositions() const override;
  [[nodiscard]] DeviceState SaveDeviceState() const override;
  [[nodiscard]] absl::Status RestoreDeviceState(const DeviceState& state) override;

  // Loop thread: the EventSet is readable.
  void ProcessEvents();

  // Loop thread, after a snapshot restore has re-activated the device: the host sockets of
  // the snapshotted connections are gone, so drop every connection and tell the guest with
  // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue (delivered as soon as the guest
  // has an event buffer), as Firecracker does. The guest then resets all its sockets.
  void ResetAllConnections();

  [[nodiscard]] std::size_t connection_count() const;
  // Connections waiting for an RX buffer (Muxer::rx_wait_count), for tests and diagnostics.
  [[nodiscard]] std::size_t rx_wait_count() const;

 private:
  VsockDevice(const VsockConfig& config, base::MetricsRegistry& metrics);

  // All of these run with mu_ held.
  void ProcessTx();
  void ProcessRx();
  // Pops the next RX chain into `chain` and checks that it can hold a packet: false when the
  // driver has posted none, or broke the rules (the device is then marked broken).
  [[nodiscard]] bool PopRxChain(DescriptorChain* chain);
  // RxBuffers over rx_chains_[0], the chain ProcessRx popped, and the ring behind it.
  void SendControl(const Header& header) override;
  Read ReadStream(int fd, const Header& rw, std::uint64_t max_bytes,
                  std::size_t max_buffers) override;
  [[nodiscard]] bool broken() const override { return broken_; }
  // Returns `chain` to the guest as the packet `header` with `payload` bytes (already in the
  // chain after the header).
  void PublishRx(const DescriptorChain& chain, Header header, std::uint32_t payload);
  void ProcessEventQueue();
  void ResetAllConnectionsLocked();
  void InterruptIfNeeded();
  void MarkBroken(const absl::Status& why);
  [[nodiscard]] bool Active() const { return rx_queue_.has_value() && !broken_; }

  const VsockConfig config_;
  const std::array<std::uint16_t, 3> queue_sizes_;
  VsockMetrics metrics_;

  mutable std::mutex mu_;
  std::unique_ptr<Muxer> muxer_;       // guarded by mu_; set by Create
  std::optional<Queue> rx_queue_;      // guarded by mu_; set while activated
  std::optional<Queue> tx_queue_;      // guarded by mu_
  std::optional<Queue> event_queue_;   // guarded by mu_
  DeviceSignals* signals_ = nullptr;   // guarded by mu_
  bool broken_ = false;                // guarded by mu_
  bool pending_transport_reset_ = false;  // guarded by mu_
  // Scratch for ProcessRx and ReadStream, kept so that the data path allocates nothing per
  // packet. Guarded by mu_.
  std::vector<DescriptorChain> rx_chains_;
  std::vector<iovec> rx_iovs_;
  std::vector<std::uint32_t> rx_rooms_;  // payload bytes each chain of a batch can take
};

}  // namespace ember::virtio::vsock
