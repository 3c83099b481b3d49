#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "virtio/device.h"
#include "virtio/event_set.h"
#include "virtio/vsock/connection.h"
#include "virtio/vsock/packet.h"
#include "vmm/base/event_fd.h"
#include "vmm/base/metrics.h"
#include "vmm/base/unique_fd.h"

namespace ember::virtio::vsock {

// The vsock device, as the VM configuration (Vsock) describes it.
struct VsockConfig {
  std::string vsock_id;  // names metrics ("vsock_<id>") and logs
  std::uint64_t guest_cid = 0;  // 3 .. 2^32-2
  // The host side: a Unix listener here for host-initiated connections; a guest connecting
  // to host port P reaches the listener at "<uds_path>_<P>".
  std::string uds_path;
  std::uint16_t queue_size = 256;
};

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
// Threads: ReadConfig/Activate/Reset come from vCPU threads through the transport;
// ProcessQueue, the EventSource callback and ResetAllConnections run on the VMM loop
// thread. mu_ guards everything they share.
class VsockDevice final : public VirtioDevice {
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
  void WriteConfig(std::uint64_t offset, std::span<const std::uint8_t> data) override;
  [[nodiscard]] absl::Status Activate(ActivationContext context) override;
  void Reset() override;
  void ProcessQueue(std::size_t index) override;
  // One source: the device's EventSet (listener, host sockets, a wake-up eventfd).
  [[nodiscard]] std::vector<EventSource> EventSources() override;
  // Snapshots. Host sockets cannot be saved, so the device-specific state is only a marker
  // that makes RestoreDeviceSpecific (on the restored, re-activated device) do what
  // ResetAllConnections does: the guest gets VIRTIO_VSOCK_EVENT_TRANSPORT_RESET.
  [[nodiscard]] std::vector<std::optional<QueuePositions>> SaveQueuePositions() const override;
  [[nodiscard]] std::string SaveDeviceSpecific() const override;
  [[nodiscard]] absl::Status RestoreDeviceSpecific(const std::string& state) override;

  // Loop thread: the EventSet is readable.
  void ProcessEvents();

  // Loop thread, after a snapshot restore has re-activated the device: the host sockets of
  // the snapshotted connections are gone, so drop every connection and tell the guest with
  // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue (delivered as soon as the guest
  // has an event buffer), as Firecracker does. The guest then resets all its sockets.
  void ResetAllConnections();

  [[nodiscard]] std::size_t connection_count() const;

 private:
  struct Metrics {
    Metrics(base::MetricsRegistry& registry, const std::string& group);
    base::Metric* rx_queue_events;
    base::Metric* tx_queue_events;
    base::Metric* event_queue_events;
    base::Metric* rx_packets;
    base::Metric* rx_bytes;
    base::Metric* tx_packets;
    base::Metric* tx_bytes;
    base::Metric* conns_added;
    base::Metric* conns_removed;
    base::Metric* conns_reset;         // RST sent to the guest for a live connection
    base::Metric* malformed_packets;
    base::Metric* credit_violations;   // the guest sent more than the credit it had
    base::Metric* host_connect_fails;  // nobody listening at <uds_path>_<port>
    base::Metric* handshake_fails;     // a host peer that did not send "CONNECT <port>\n"
    base::Metric* rx_rst_dropped;      // orphan RSTs beyond the bounded backlog
    base::Metric* invalid_chains;      // the driver broke the virtqueue: NEEDS_RESET
    base::Metric* transport_resets;
  };

  // Connections are keyed as Firecracker keys them: (host-side port, guest-side port).
  using Key = std::pair<std::uint32_t, std::uint32_t>;

  // A host peer that connected to uds_path and has not finished "CONNECT <port>\n".
  struct Handshake {
    base::UniqueFd sock;
    std::string line;  // received so far, without the newline
  };

  VsockDevice(const VsockConfig& config, base::UniqueFd listener, EventSet events,
              base::EventFd wake, base::MetricsRegistry& metrics);

  // All of these run with mu_ held.
  void AcceptHostConnections();
  void ProcessHandshake(int fd);
  void ProcessSocket(int fd, std::uint32_t events);
  void ProcessTx();
  void HandleGuestPacket(const Header& header, const DescriptorChain& chain);
  void HandleGuestRequest(const Header& header);
  void HandleGuestRw(Connection& conn, const Header& header, const DescriptorChain& chain);
  void ProcessRx();
  // Pops the next RX chain into `chain` and checks that it can hold a packet: false when the
  // driver has posted none, or broke the rules (the device is then marked broken).
  [[nodiscard]] bool PopRxChain(DescriptorChain* chain);
  // Fills RX chain `chain` (rx_chains_[0]) for `conn`, and maybe more: true when it used it.
  [[nodiscard]] bool FillRx(Connection& conn, const DescriptorChain& chain);
  // One readv of conn's socket into rx_chains_[0] and as many further RX chains as it pops
  // (up to conn.rx_batch, within `credit`); each chain that got bytes is a RW packet. What
  // readv returned (errno set when negative).
  [[nodiscard]] ssize_t ReadHostData(Connection& conn, std::uint32_t credit);
  // Returns `chain` to the guest as the packet `header` with `payload` bytes (already in the
  // chain after the header), counting it.
  void WriteRx(const DescriptorChain& chain, const Header& header, std::uint32_t payload);
  // WriteRx without the count, for callers that count a batch at once.
  void PublishRx(const DescriptorChain& chain, Header header, std::uint32_t payload);
  void ProcessEventQueue();
  [[nodiscard]] Header ReplyHeader(const Connection& conn, Op op) const;
  // The RST answering guest packet `to`.
  [[nodiscard]] Header RstFor(const Header& to) const;
  void WantRx(Connection& conn);
  // Queues a CREDIT_UPDATE when Connection::CreditUpdateDue.
  void MaybeSendCreditUpdate(Connection& conn);
  void QueueRst(const Header& rst);
  void UpdateInterest(Connection& conn);
  // Forgets the connection, first queueing an RST for the guest when `tell_guest`.
  void ResetConnection(const Key& key, bool tell_guest);
  void RemoveConnection(const Key& key);
  void CloseAllConnections();
  void ResetAllConnectionsLocked();
  void MaybeFinishClose(const Key& key);
  void InterruptIfNeeded();
  void MarkBroken(const absl::Status& why);
  [[nodiscard]] bool Active() const { return rx_queue_.has_value() && !broken_; }

  const VsockConfig config_;
  const std::array<std::uint16_t, 3> queue_sizes_;
  Metrics metrics_;
  const base::UniqueFd listener_;
  EventSet events_;
  const base::EventFd wake_;

  mutable std::mutex mu_;
  std::optional<Queue> rx_queue_;      // guarded by mu_; set while activated
  std::optional<Queue> tx_queue_;      // guarded by mu_
  std::optional<Queue> event_queue_;   // guarded by mu_
  DeviceSignals* signals_ = nullptr;   // guarded by mu_
  bool broken_ = false;                // guarded by mu_
  bool pending_transport_reset_ = false;  // guarded by mu_
  std::map<Key, std::unique_ptr<Connection>> conns_;  // guarded by mu_
  std::unordered_map<int, Key> conn_by_fd_;           // guarded by mu_
  std::unordered_map<int, Handshake> handshakes_;     // guarded by mu_; by fd
  std::deque<Key> rx_list_;            // guarded by mu_; connections with packets to send
  std::deque<Header> pending_rsts_;    // guarded by mu_; RSTs waiting for RX buffers
  std::set<std::uint32_t> host_ports_;  // guarded by mu_; host-side ports in use (host-init)
  std::uint32_t next_host_port_ = 1u << 30;  // guarded by mu_
  // Scratch for ProcessRx and ReadHostData, kept so that the data path allocates nothing per
  // packet. Guarded by mu_.
  std::vector<DescriptorChain> rx_chains_;
  std::vector<iovec> rx_iovs_;
  std::vector<std::uint32_t> rx_rooms_;  // payload bytes each chain of a batch can take
};

}  // namespace ember::virtio::vsock
