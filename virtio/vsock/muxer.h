#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>

#include "absl/status/statusor.h"
#include "virtio/descriptor_chain.h"
#include "virtio/event_set.h"
#include "virtio/vsock/config.h"
#include "virtio/vsock/connection.h"
#include "virtio/vsock/metrics.h"
#include "virtio/vsock/packet.h"
#include "vmm/base/event_fd.h"
#include "vmm/base/unique_fd.h"

namespace ember::virtio::vsock {

// The host side of a vsock device, Firecracker's Unix-socket backend: the listener at
// uds_path and the "CONNECT <port>\n" handshake of host peers, the guest's connections to
// "<uds_path>_<port>", the map of live connections, their sockets' epoll watch, and what
// waits for RX buffers (RSTs, then connections in round robin). It knows nothing of queues:
// the device hands it each guest packet and each RX buffer.
//
// Owned by the VsockDevice and used under its lock, from the vCPU thread that activates the
// device (Wake) and the VMM loop thread (everything else).
class Muxer {
 public:
  // Connections are keyed as Firecracker keys them: (host-side port, guest-side port).
  using Key = std::pair<std::uint32_t, std::uint32_t>;

  // Binds the listener at config.uds_path. Errors: an empty or overlong path, a path that
  // already exists, a directory that does not. `metrics` must outlive the muxer.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Muxer>> Create(const VsockConfig& config,
                                                                     VsockMetrics& metrics);
  // Closes every socket and removes the listener's socket file.
  ~Muxer();
  Muxer(const Muxer&) = delete;
  Muxer& operator=(const Muxer&) = delete;

  // Readable while a socket of the muxer is ready, or after Wake; the loop then calls
  // ProcessEvents. Owned by the muxer.
  [[nodiscard]] int event_fd() const { return events_.fd(); }
  // Makes event_fd readable, so that the loop thread runs ProcessEvents (and the device its
  // RX queue) soon.
  void Wake() { wake_.Signal(); }
  // Loop thread: accepts host peers, reads their handshakes, serves ready sockets.
  void ProcessEvents();

  // One packet the guest sent (`chain` holds it, header first), its header decoded.
  void OnGuestPacket(const Header& header, const DescriptorChain& chain);

  // Whether FillRx has a packet for the guest.
  [[nodiscard]] bool HasPendingRx() const { return !pending_rsts_.empty() || !rx_wait_.empty(); }
  // Puts the next packet for the guest in `rx`'s first buffer: a queued RST first, then the
  // connection at the head of the RX wait list. False when the buffer stayed empty.
  [[nodiscard]] bool FillRx(RxBuffers& rx);

  // Closes every connection and forgets the RSTs and packets waiting for the guest (its
  // driver is gone). Host peers still in the handshake stay.
  void CloseAll();

  [[nodiscard]] std::size_t connection_count() const { return conns_.size(); }
  // Connections waiting for an RX buffer: at most one entry per live connection.
  [[nodiscard]] std::size_t rx_wait_count() const { return rx_wait_.size(); }
  // The live connection `key`, nullptr when there is none (for snapshots and tests).
  [[nodiscard]] const Connection* Find(const Key& key) const;

 private:
  // A host peer that connected to uds_path and has not finished "CONNECT <port>\n".
  struct Handshake {
    base::UniqueFd sock;
    std::string line;  // received so far, without the newline
  };
  struct Entry {
    Connection conn;
    bool watched = false;     // its socket is in the EventSet
    bool waiting_rx = false;  // in rx_wait_
  };

  Muxer(const VsockConfig& config, VsockMetrics& metrics, base::UniqueFd listener,
        EventSet events, base::EventFd wake, base::UniqueFd dir);

  void AcceptHostConnections();
  void ProcessHandshake(int fd);
  void ProcessSocket(int fd, std::uint32_t events);
  void OnGuestRequest(const Header& header);
  // connect(2) of `sock` to the socket for host port `port` (at `path`), as connect returns.
  [[nodiscard]] int ConnectToHostPort(int sock, std::uint32_t port, const std::string& path) const;
  void Add(Connection conn);
  // Acts on what a connection answered: forgets it, or queues it for RX.
  void Apply(const Key& key, Connection::Verdict verdict);
  void WantRx(const Key& key, Entry& entry);
  // The RST answering guest packet `to`.
  [[nodiscard]] Header RstFor(const Header& to) const;
  void QueueRst(const Header& rst);
  // Forgets the connection, first queueing an RST for the guest when `tell_guest`.
  void Remove(const Key& key, bool tell_guest);
  [[nodiscard]] std::string name() const { return "vsock_" + config_.vsock_id; }

  const VsockConfig config_;
  VsockMetrics& metrics_;
  const base::UniqueFd listener_;
  // The directory uds_path lies in (O_PATH), where the guest's connections go; the prefix
  // of their names in it ("<last component of uds_path>_"); whether /proc/self/fd is there
  // to connect through (ConnectToHostPort).
  const base::UniqueFd dir_;
  std::string port_prefix_;
  bool proc_fds_ = false;
  EventSet events_;
  const base::EventFd wake_;

  std::map<Key, Entry> conns_;
  std::unordered_map<int, Key> conn_by_fd_;
  std::unordered_map<int, Handshake> handshakes_;  // by fd
  // Live connections with packets for the guest, in round-robin order, each at most once: an
  // entry leaves with its connection, so a guest that posts no RX buffers and churns
  // connections cannot grow it (and a new connection on the same ports is not served twice).
  std::deque<Key> rx_wait_;
  std::deque<Header> pending_rsts_;  // RSTs waiting for RX buffers
  std::set<std::uint32_t> host_ports_;  // host-side ports in use (host-initiated)
  std::uint32_t next_host_port_ = 1u << 30;
};

}  // namespace ember::virtio::vsock
