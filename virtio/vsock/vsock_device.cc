#include "virtio/vsock/vsock_device.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "virtio/spec.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"

namespace ember::virtio::vsock {
namespace {

// EventSet tokens: the kind in the high half, the fd in the low half.
constexpr std::uint64_t kKindListener = 1;
constexpr std::uint64_t kKindWake = 2;
constexpr std::uint64_t kKindHandshake = 3;
constexpr std::uint64_t kKindConnection = 4;
std::uint64_t Token(std::uint64_t kind, int fd) {
  return (kind << 32) | static_cast<std::uint32_t>(fd);
}

// Firecracker's limit on concurrent connections per device.
constexpr std::size_t kMaxConnections = 1023;
// RSTs waiting for RX buffers; beyond this a guest that floods bad packets without reading
// loses the excess (counted).
constexpr std::size_t kMaxPendingRsts = 1024;
// "CONNECT 4294967295\n" is 19 bytes; a longer line without a newline is not a handshake.
constexpr std::size_t kMaxHandshakeLine = 32;

constexpr std::uint32_t kIn = EPOLLIN;
constexpr std::uint32_t kOut = EPOLLOUT;

// SaveDeviceSpecific's marker: "the guest had a transport; reset it on restore".
constexpr std::string_view kSnapshotMarker = "ember.vsock.v1:transport-reset";

// The most iovecs one readv/sendmsg takes.
constexpr std::size_t kMaxIov = IOV_MAX;
// One readv of a host socket fills at most this much, in at most this many RX buffers: one
// maximal packet's worth, so that a busy connection takes its turn in the round robin after
// 16 of Linux's 4 KiB buffers rather than after the guest's whole credit.
constexpr std::uint64_t kMaxRxBatchBytes = kMaxPayload;
constexpr std::size_t kMaxRxBatchChains = 64;

// Appends to `out` the iovecs of the `len` payload bytes after the header in `chain`'s
// writable stream, straight from its descriptors (DescriptorChain::WritableIoVecs would build
// them in a vector of their own, to be copied again). False when the stream is shorter.
bool AppendWritableIoVecs(const DescriptorChain& chain, std::uint64_t len, std::vector<iovec>* out) {
  std::uint64_t skip = kHeaderSize;
  for (const Descriptor& d : chain.writable()) {
    if (len == 0) break;
    if (skip >= d.len) {
      skip -= d.len;
      continue;
    }
    const std::uint64_t take = std::min<std::uint64_t>(d.len - skip, len);
    out->push_back({d.host.data() + skip, take});
    len -= take;
    skip = 0;
  }
  return len == 0;
}

std::optional<std::uint32_t> ParseConnect(const std::string& line) {
  constexpr std::string_view kPrefix = "CONNECT ";
  if (line.size() <= kPrefix.size() || line.compare(0, kPrefix.size(), kPrefix) != 0) {
    return std::nullopt;
  }
  std::uint32_t port = 0;
  const char* begin = line.data() + kPrefix.size();
  const char* end = line.data() + line.size();
  auto [ptr, ec] = std::from_chars(begin, end, port);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return port;
}

}  // namespace

VsockDevice::Metrics::Metrics(base::MetricsRegistry& registry, const std::string& group)
    : rx_queue_events(registry.Get(group, "rx_queue_events")),
      tx_queue_events(registry.Get(group, "tx_queue_events")),
      event_queue_events(registry.Get(group, "event_queue_events")),
      rx_packets(registry.Get(group, "rx_packets")),
      rx_bytes(registry.Get(group, "rx_bytes")),
      tx_packets(registry.Get(group, "tx_packets")),
      tx_bytes(registry.Get(group, "tx_bytes")),
      conns_added(registry.Get(group, "conns_added")),
      conns_removed(registry.Get(group, "conns_removed")),
      conns_reset(registry.Get(group, "conns_reset")),
      malformed_packets(registry.Get(group, "malformed_packets")),
      credit_violations(registry.Get(group, "credit_violations")),
      host_connect_fails(registry.Get(group, "host_connect_fails")),
      handshake_fails(registry.Get(group, "handshake_fails")),
      rx_rst_dropped(registry.Get(group, "rx_rst_dropped")),
      invalid_chains(registry.Get(group, "invalid_chains")),
      transport_resets(registry.Get(group, "transport_resets")) {}

absl::StatusOr<std::unique_ptr<VsockDevice>> VsockDevice::Create(const VsockConfig& config,
                                                                 base::MetricsRegistry& metrics) {
  const std::string what = absl::StrCat("vsock ", config.vsock_id);
  if (config.guest_cid < kMinGuestCid || config.guest_cid > 0xfffffffeull) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": guest_cid ", config.guest_cid,
                                                   " is outside [3, 4294967294]"));
  }
  if (config.queue_size < 2 || config.queue_size > kMaxQueueSize ||
      (config.queue_size & (config.queue_size - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": queue size ", config.queue_size,
                                                   " is not a power of two in [2, 32768]"));
  }
  sockaddr_un addr{};
  // Room for the path plus "_<port>" of the per-port listeners the guest connects to.
  const std::size_t max_len = sizeof(addr.sun_path) - 1 - std::string_view("_4294967295").size();
  if (config.uds_path.empty() || config.uds_path.size() > max_len) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": uds_path \"", config.uds_path,
                                                   "\" must be 1 to ", max_len, " bytes"));
  }
  struct stat st {};
  if (::lstat(config.uds_path.c_str(), &st) == 0) {
    return absl::AlreadyExistsError(absl::StrCat(what, ": uds_path ", config.uds_path,
                                                 " already exists; remove it first"));
  }
  base::UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listener) return base::ErrnoError("socket", what);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, config.uds_path.data(), config.uds_path.size());
  // sockaddr_un is the address type bind() takes through its generic pointer.
  if (::bind(listener.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return base::ErrnoError("bind", absl::StrCat(what, " (", config.uds_path, ")"));
  }
  if (::listen(listener.Get(), 128) != 0) {
    const absl::Status status = base::ErrnoError("listen", config.uds_path);
    ::unlink(config.uds_path.c_str());
    return status;
  }
  auto cleanup_on_error = [&](absl::Status status) {
    ::unlink(config.uds_path.c_str());
    return status;
  };
  auto events = EventSet::Create();
  if (!events.ok()) return cleanup_on_error(events.status());
  auto wake = base::EventFd::Create();
  if (!wake.ok()) return cleanup_on_error(wake.status());
  absl::Status added = events->Add(listener.Get(), kIn, Token(kKindListener, listener.Get()));
  if (added.ok()) added = events->Add(wake->Get(), kIn, Token(kKindWake, wake->Get()));
  if (!added.ok()) return cleanup_on_error(added);
  return std::unique_ptr<VsockDevice>(new VsockDevice(
      config, std::move(listener), std::move(events).value(), std::move(wake).value(), metrics));
}

VsockDevice::VsockDevice(const VsockConfig& config, base::UniqueFd listener, EventSet events,
                         base::EventFd wake, base::MetricsRegistry& metrics)
    : config_(config),
      queue_sizes_{config.queue_size, config.queue_size, config.queue_size},
      metrics_(metrics, "vsock_" + config.vsock_id),
      listener_(std::move(listener)),
      events_(std::move(events)),
      wake_(std::move(wake)) {}

VsockDevice::~VsockDevice() { ::unlink(config_.uds_path.c_str()); }

std::uint32_t VsockDevice::device_id() const { return kDeviceIdVsock; }

std::uint64_t VsockDevice::offered_features() const {
  return FeatureBit(kFeatureVersion1) | FeatureBit(kFeatureEventIdx) |
         FeatureBit(kFeatureIndirectDesc);
}

void VsockDevice::ReadConfig(std::uint64_t offset, std::span<std::uint8_t> data) const {
  // struct virtio_vsock_config: le64 guest_cid.
  std::uint8_t config[8];
  std::memcpy(config, &config_.guest_cid, sizeof(config));
  for (std::size_t i = 0; i < data.size(); ++i) {
    data[i] = offset + i < sizeof(config) ? config[offset + i] : 0;
  }
}

void VsockDevice::WriteConfig(std::uint64_t, std::span<const std::uint8_t>) {
  // The guest CID is read-only.
}

absl::Status VsockDevice::Activate(ActivationContext context) {
  if (context.queues.size() != 3 || !context.queues[kRxQueue] || !context.queues[kTxQueue] ||
      !context.queues[kEventQueue]) {
    return absl::FailedPreconditionError(
        name() + ": the driver did not enable the RX, TX and event queues");
  }
  std::lock_guard lock(mu_);
  rx_queue_ = std::move(context.queues[kRxQueue]);
  tx_queue_ = std::move(context.queues[kTxQueue]);
  event_queue_ = std::move(context.queues[kEventQueue]);
  signals_ = context.signals;
  broken_ = false;
  // Host connections that arrived before the driver was ready wait in rx_list_.
  wake_.Signal();
  return absl::OkStatus();
}

void VsockDevice::Reset() {
  std::lock_guard lock(mu_);
  // The guest's sockets went with its driver. Before the first activation (the reset that
  // starts every probe) there were none, and host connections waiting for the guest stay.
  if (rx_queue_) CloseAllConnections();
  rx_queue_.reset();
  tx_queue_.reset();
  event_queue_.reset();
  signals_ = nullptr;
  broken_ = false;
  pending_transport_reset_ = false;
}

std::vector<EventSource> VsockDevice::EventSources() {
  return {{events_.fd(), [this] { ProcessEvents(); }}};
}

std::size_t VsockDevice::connection_count() const {
  std::lock_guard lock(mu_);
  return conns_.size();
}

void VsockDevice::ProcessQueue(std::size_t index) {
  std::lock_guard lock(mu_);
  if (index == kRxQueue) {
    metrics_.rx_queue_events->Add();
  } else if (index == kTxQueue) {
    metrics_.tx_queue_events->Add();
    ProcessTx();
  } else if (index == kEventQueue) {
    metrics_.event_queue_events->Add();
    ProcessEventQueue();
  }
  ProcessRx();
  InterruptIfNeeded();
}

void VsockDevice::ProcessEvents() {
  std::array<epoll_event, 64> ready{};
  const std::size_t n = events_.Poll(ready);
  std::lock_guard lock(mu_);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t kind = ready[i].data.u64 >> 32;
    const auto fd = static_cast<int>(ready[i].data.u64 & 0xffffffff);
    switch (kind) {
      case kKindListener:
        AcceptHostConnections();
        break;
      case kKindWake:
        wake_.Consume();
        break;
      case kKindHandshake:
        ProcessHandshake(fd);
        break;
      case kKindConnection:
        ProcessSocket(fd, ready[i].events);
        break;
      default:
        break;
    }
  }
  ProcessEventQueue();
  ProcessRx();
  InterruptIfNeeded();
}

std::vector<std::optional<QueuePositions>> VsockDevice::SaveQueuePositions() const {
  std::lock_guard lock(mu_);
  if (!rx_queue_ || !tx_queue_ || !event_queue_) return {};
  return {QueuePositions{rx_queue_->next_avail(), rx_queue_->next_used()},
          QueuePositions{tx_queue_->next_avail(), tx_queue_->next_used()},
          QueuePositions{event_queue_->next_avail(), event_queue_->next_used()}};
}

std::string VsockDevice::SaveDeviceSpecific() const { return std::string(kSnapshotMarker); }

absl::Status VsockDevice::RestoreDeviceSpecific(const std::string& state) {
  if (!state.empty() && state != kSnapshotMarker) {
    return absl::InvalidArgumentError(name() + ": unknown device-specific state");
  }
  std::lock_guard lock(mu_);
  if (!state.empty() && event_queue_) ResetAllConnectionsLocked();
  return absl::OkStatus();
}

void VsockDevice::ResetAllConnections() {
  std::lock_guard lock(mu_);
  ResetAllConnectionsLocked();
}

void VsockDevice::ResetAllConnectionsLocked() {
  CloseAllConnections();
  pending_transport_reset_ = true;
  metrics_.transport_resets->Add();
  ProcessEventQueue();
  InterruptIfNeeded();
}

// --- Host side ---------------------------------------------------------------------------

void VsockDevice::AcceptHostConnections() {
  for (;;) {
    base::UniqueFd sock(::accept4(listener_.Get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!sock) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        EMBER_LOG(kWarn) << name() << ": " << base::ErrnoError("accept4", config_.uds_path);
      }
      return;
    }
    if (conns_.size() + handshakes_.size() >= kMaxConnections) {
      metrics_.handshake_fails->Add();
      continue;  // closing it tells the host peer
    }
    const int fd = sock.Get();
    absl::Status added = events_.Add(fd, kIn, Token(kKindHandshake, fd));
    if (!added.ok()) {
      EMBER_LOG(kWarn) << name() << ": " << added;
      continue;
    }
    handshakes_.emplace(fd, Handshake{std::move(sock), {}});
  }
}

void VsockDevice::ProcessHandshake(int fd) {
  auto it = handshakes_.find(fd);
  if (it == handshakes_.end()) return;
  Handshake& hs = it->second;
  auto fail = [&](const char* why) {
    metrics_.handshake_fails->Add();
    EMBER_LOG(kDebug) << name() << ": host connection dropped: " << why;
    events_.Remove(fd);
    handshakes_.erase(it);
  };
  // Peek first: bytes after the newline are stream data and must stay in the socket.
  char buf[kMaxHandshakeLine];
  const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    return fail("recv failed");
  }
  if (n == 0) return fail("closed before CONNECT");
  const auto* newline = static_cast<const char*>(std::memchr(buf, '\n', static_cast<std::size_t>(n)));
  const std::size_t take = newline ? static_cast<std::size_t>(newline - buf) + 1
                                   : static_cast<std::size_t>(n);
  if (::recv(fd, buf, take, MSG_DONTWAIT) != static_cast<ssize_t>(take)) return fail("recv failed");
  hs.line.append(buf, newline ? take - 1 : take);
  if (!newline) {
    if (hs.line.size() >= kMaxHandshakeLine) fail("no newline after CONNECT");
    return;
  }
  const std::optional<std::uint32_t> port = ParseConnect(hs.line);
  if (!port) return fail("not \"CONNECT <port>\"");

  std::uint32_t local = next_host_port_;
  while (host_ports_.contains(local) || local < (1u << 30)) {
    local = local < (1u << 30) ? (1u << 30) : local + 1;
  }
  next_host_port_ = local + 1;
  const Key key{local, *port};
  if (conns_.contains(key)) return fail("port pair in use");
  base::UniqueFd sock = std::move(hs.sock);
  events_.Remove(fd);
  handshakes_.erase(it);
  auto conn = std::make_unique<Connection>(std::move(sock), local, *port,
                                           Connection::State::kLocalInit, true);
  conn->interest = 0;  // not in the EventSet until established
  conn->want_request = true;
  Connection& c = *conn;
  conns_.emplace(key, std::move(conn));
  conn_by_fd_[fd] = key;
  host_ports_.insert(local);
  metrics_.conns_added->Add();
  WantRx(c);
}

void VsockDevice::ProcessSocket(int fd, std::uint32_t events) {
  auto by_fd = conn_by_fd_.find(fd);
  if (by_fd == conn_by_fd_.end()) return;
  const Key key = by_fd->second;
  Connection& conn = *conns_.at(key);
  if (!conn.TxBufferEmpty()) {
    if (!conn.Flush()) return ResetConnection(key, true);
    MaybeSendCreditUpdate(conn);
    if (conn.TxBufferEmpty() && conn.guest_shut_send) {
      MaybeFinishClose(key);
      if (!conns_.contains(key)) return;
    }
  }
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0 && (conn.interest & kIn) != 0) {
    // Read when an RX buffer is there for it; until then the socket stops waking the loop.
    conn.want_data = true;
    WantRx(conn);
  }
  UpdateInterest(conn);
}

void VsockDevice::UpdateInterest(Connection& conn) {
  std::uint32_t want = 0;
  if (conn.state == Connection::State::kEstablished && !conn.want_data && !conn.host_eof &&
      !conn.guest_shut_rcv && conn.PeerFreeCredit() > 0) {
    want |= kIn;
  }
  if (!conn.TxBufferEmpty()) want |= kOut;
  const std::uint32_t have = conn.interest == ~0u ? 0 : conn.interest;
  if (want == have && conn.interest != ~0u) return;
  const int fd = conn.sock.Get();
  absl::Status status = absl::OkStatus();
  // A socket with no interest leaves the set: EPOLLHUP is reported whatever was asked for,
  // and would wake the loop again and again for a peer the device is not ready to handle.
  if (want == 0) {
    if (have != 0) events_.Remove(fd);
  } else if (have == 0) {
    status = events_.Add(fd, want, Token(kKindConnection, fd));
  } else {
    status = events_.Modify(fd, want, Token(kKindConnection, fd));
  }
  if (!status.ok()) {
    EMBER_LOG(kError) << name() << ": " << status;
  }
  conn.interest = want;
}

void VsockDevice::MaybeFinishClose(const Key& key) {
  Connection& conn = *conns_.at(key);
  if (!conn.guest_shut_send || !conn.TxBufferEmpty()) return;
  if (conn.guest_shut_rcv) {
    // Both directions closed by the guest, everything it sent delivered: the RST completes
    // its close (spec 5.10.6.6).
    ResetConnection(key, true);
    return;
  }
  if (!conn.host_shut_wr) {
    ::shutdown(conn.sock.Get(), SHUT_WR);
    conn.host_shut_wr = true;
  }
}

void VsockDevice::ResetConnection(const Key& key, bool tell_guest) {
  auto it = conns_.find(key);
  if (it == conns_.end()) return;
  if (tell_guest) {
    metrics_.conns_reset->Add();
    Header rst = ReplyHeader(*it->second, Op::kRst);
    QueueRst(rst);
  }
  RemoveConnection(key);
}

void VsockDevice::RemoveConnection(const Key& key) {
  auto it = conns_.find(key);
  if (it == conns_.end()) return;
  Connection& conn = *it->second;
  if (conn.interest != 0 && conn.interest != ~0u) events_.Remove(conn.sock.Get());
  conn_by_fd_.erase(conn.sock.Get());
  if (conn.host_initiated) host_ports_.erase(conn.local_port);
  conns_.erase(it);
  metrics_.conns_removed->Add();
}

void VsockDevice::CloseAllConnections() {
  while (!conns_.empty()) RemoveConnection(conns_.begin()->first);
  rx_list_.clear();
  pending_rsts_.clear();
}

// --- Guest to host (TX queue) --------------------------------------------------------------

void VsockDevice::ProcessTx() {
  if (!tx_queue_ || broken_) return;
  do {
    tx_queue_->DisableNotification();
    for (;;) {
      auto popped = tx_queue_->Pop();
      if (!popped.ok()) return MarkBroken(popped.status());
      if (!popped->has_value()) break;
      const DescriptorChain& chain = **popped;
      metrics_.tx_packets->Add();
      if (chain.writable_bytes != 0 || chain.readable_bytes < kHeaderSize) {
        metrics_.malformed_packets->Add();
        EMBER_LOG(kDebug) << name() << ": TX chain " << chain.head
                          << " is too short or device-writable";
      } else {
        std::array<std::uint8_t, kHeaderSize> raw{};
        if (chain.CopyFromReadable(0, raw)) HandleGuestPacket(Header::Decode(raw), chain);
      }
      tx_queue_->AddUsed(chain.head, 0);
    }
  } while (!broken_ && tx_queue_->EnableNotification());
}

void VsockDevice::HandleGuestPacket(const Header& h, const DescriptorChain& chain) {
  auto malformed = [&](const char* why, bool answer) {
    metrics_.malformed_packets->Add();
    EMBER_LOG(kDebug) << name() << ": malformed packet from the guest (" << why << "), op "
                      << h.op << " " << h.src_port << "->" << h.dst_port;
    if (!answer) return;
    // The guest's socket may be waiting on this packet; an RST ends the wait.
    const Key key{h.dst_port, h.src_port};
    if (conns_.contains(key)) {
      ResetConnection(key, true);
    } else {
      QueueRst(RstFor(h));
    }
  };
  // A packet claiming another source is not the guest's to answer for.
  if (h.src_cid != config_.guest_cid) return malformed("wrong source CID", false);
  if (h.op == static_cast<std::uint16_t>(Op::kRst) && h.dst_cid != kHostCid) {
    return malformed("RST to an unknown CID", false);
  }
  if (h.dst_cid != kHostCid) return malformed("destination is not the host", true);
  if (h.type != kTypeStream) return malformed("unknown socket type", true);
  if (h.len > kMaxPayload || h.len > chain.readable_bytes - kHeaderSize) {
    return malformed("length beyond the buffer or the 64 KiB maximum", true);
  }
  if (h.op == 0 || h.op > static_cast<std::uint16_t>(Op::kCreditRequest)) {
    return malformed("unknown op", true);
  }
  const auto op = static_cast<Op>(h.op);
  if (op != Op::kRw && h.len != 0) return malformed("payload on a control packet", true);

  const Key key{h.dst_port, h.src_port};
  if (op == Op::kRequest) return HandleGuestRequest(h);
  auto it = conns_.find(key);
  if (it == conns_.end()) {
    // Late packets of a connection already gone: answer with RST, as the spec asks, except
    // to an RST.
    if (op != Op::kRst) QueueRst(RstFor(h));
    return;
  }
  Connection& conn = *it->second;
  if (h.fwd_cnt != conn.peer_fwd_cnt) conn.credit_requested = false;
  conn.peer_buf_alloc = h.buf_alloc;
  conn.peer_fwd_cnt = h.fwd_cnt;
  switch (op) {
    case Op::kResponse: {
      if (conn.state != Connection::State::kLocalInit) return ResetConnection(key, true);
      conn.state = Connection::State::kEstablished;
      const std::string ok = absl::StrCat("OK ", conn.local_port, "\n");
      conn.Append(std::span(reinterpret_cast<const std::uint8_t*>(ok.data()), ok.size()),
                  /*counted=*/false);
      if (!conn.Flush()) return ResetConnection(key, true);
      break;
    }
    case Op::kRst:
      return RemoveConnection(key);
    case Op::kShutdown:
      if (h.flags & kShutdownRcv) conn.guest_shut_rcv = true;
      if (h.flags & kShutdownSend) conn.guest_shut_send = true;
      if (conn.state == Connection::State::kClosing) {
        // The host already left; the guest's SHUTDOWN answers ours.
        if (conn.guest_shut_rcv && conn.guest_shut_send) return ResetConnection(key, true);
        break;
      }
      MaybeFinishClose(key);
      if (!conns_.contains(key)) return;
      break;
    case Op::kRw:
      HandleGuestRw(conn, h, chain);
      if (!conns_.contains(key)) return;
      break;
    case Op::kCreditRequest:
      conn.want_credit_update = true;
      WantRx(conn);
      break;
    default:  // CREDIT_UPDATE: the header already updated the credit
      break;
  }
  UpdateInterest(conn);
}

void VsockDevice::HandleGuestRequest(const Header& h) {
  const Key key{h.dst_port, h.src_port};
  if (conns_.contains(key)) {
    metrics_.malformed_packets->Add();
    return ResetConnection(key, true);
  }
  if (conns_.size() >= kMaxConnections) {
    metrics_.host_connect_fails->Add();
    return QueueRst(RstFor(h));
  }
  const std::string path = absl::StrCat(config_.uds_path, "_", h.dst_port);
  base::UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), std::min(path.size(), sizeof(addr.sun_path) - 1));
  // A Unix stream connect either completes at once or fails (EAGAIN: the listener's backlog
  // is full); it never blocks the loop with SOCK_NONBLOCK.
  if (!sock ||
      ::connect(sock.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    metrics_.host_connect_fails->Add();
    EMBER_LOG(kDebug) << name() << ": guest connect to host port " << h.dst_port << ": "
                      << base::ErrnoError("connect", path);
    return QueueRst(RstFor(h));
  }
  const int fd = sock.Get();
  auto conn = std::make_unique<Connection>(std::move(sock), h.dst_port, h.src_port,
                                           Connection::State::kEstablished, false);
  conn->peer_buf_alloc = h.buf_alloc;
  conn->peer_fwd_cnt = h.fwd_cnt;
  conn->want_response = true;
  Connection& c = *conn;
  conns_.emplace(key, std::move(conn));
  conn_by_fd_[fd] = key;
  metrics_.conns_added->Add();
  WantRx(c);
  UpdateInterest(c);
}

void VsockDevice::HandleGuestRw(Connection& conn, const Header& h, const DescriptorChain& chain) {
  const Key key{conn.local_port, conn.peer_port};
  if (h.len == 0) return;
  if (conn.state == Connection::State::kClosing) return;  // the host is gone; drop
  if (conn.state != Connection::State::kEstablished || conn.guest_shut_send) {
    metrics_.malformed_packets->Add();
    return ResetConnection(key, true);
  }
  if (conn.PendingGuestBytes() + h.len > kConnBufferSize) {
    metrics_.credit_violations->Add();
    EMBER_LOG(kDebug) << name() << ": guest overran its credit on port " << conn.peer_port;
    return ResetConnection(key, true);
  }
  metrics_.tx_bytes->Add(h.len);
  std::size_t written = 0;
  const bool was_empty = conn.TxBufferEmpty();
  bool sent = false;
  IoVecs iovs;
  // Straight from guest memory to the socket when nothing is queued before this packet.
  if (was_empty && chain.ReadableIoVecs(kHeaderSize, h.len, &iovs) && iovs.size() <= kMaxIov) {
    sent = true;
    msghdr msg{};
    msg.msg_iov = iovs.data();
    msg.msg_iovlen = iovs.size();
    ssize_t n;
    do {
      n = ::sendmsg(conn.sock.Get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return ResetConnection(key, true);
    written = n < 0 ? 0 : static_cast<std::size_t>(n);
    conn.fwd_cnt += static_cast<std::uint32_t>(written);
  }
  if (written < h.len) {
    // The socket is full (or the chain too fragmented for one sendmsg): the rest goes into
    // the connection's buffer, copied once, and the chain back to the guest, so that a slow
    // host reader holds no TX descriptors that other connections need.
    const std::size_t rest = h.len - written;
    const auto space = conn.TxSpace(rest);
    if (!chain.CopyFromReadable(kHeaderSize + written, space[0]) ||
        !chain.CopyFromReadable(kHeaderSize + written + space[0].size(), space[1])) {
      return ResetConnection(key, true);
    }
    conn.CommitTx(rest, /*counted=*/true);
    // A socket that just took less than offered, or has bytes queued already, is written
    // again on EPOLLOUT (UpdateInterest); trying now would only meet EAGAIN.
    if (was_empty && !sent && !conn.Flush()) return ResetConnection(key, true);
  }
  MaybeSendCreditUpdate(conn);
}

void VsockDevice::MaybeSendCreditUpdate(Connection& conn) {
  if (!conn.CreditUpdateDue()) return;
  conn.want_credit_update = true;
  WantRx(conn);
}

// --- Host to guest (RX queue) ----------------------------------------------------------------

Header VsockDevice::ReplyHeader(const Connection& conn, Op op) const {
  Header h;
  h.src_cid = kHostCid;
  h.dst_cid = config_.guest_cid;
  h.src_port = conn.local_port;
  h.dst_port = conn.peer_port;
  h.type = kTypeStream;
  h.op = static_cast<std::uint16_t>(op);
  h.buf_alloc = kConnBufferSize;
  h.fwd_cnt = conn.fwd_cnt;
  return h;
}

Header VsockDevice::RstFor(const Header& to) const {
  Header h;
  h.src_cid = kHostCid;
  h.dst_cid = config_.guest_cid;
  h.src_port = to.dst_port;
  h.dst_port = to.src_port;
  h.type = kTypeStream;
  h.op = static_cast<std::uint16_t>(Op::kRst);
  return h;
}

void VsockDevice::QueueRst(const Header& rst) {
  if (pending_rsts_.size() >= kMaxPendingRsts) {
    metrics_.rx_rst_dropped->Add();
    return;
  }
  pending_rsts_.push_back(rst);
}

void VsockDevice::WantRx(Connection& conn) {
  if (conn.in_rx_list) return;
  conn.in_rx_list = true;
  rx_list_.emplace_back(conn.local_port, conn.peer_port);
}

bool VsockDevice::PopRxChain(DescriptorChain* chain) {
  auto popped = rx_queue_->Pop(chain);
  if (!popped.ok()) {
    MarkBroken(popped.status());
    return false;
  }
  if (!*popped) return false;
  if (chain->readable_count != 0 || chain->writable_bytes < kHeaderSize) {
    MarkBroken(absl::InvalidArgumentError(absl::StrCat(
        "RX chain ", chain->head, " is device-readable or shorter than a packet header")));
    return false;
  }
  return true;
}

void VsockDevice::ProcessRx() {
  if (!Active()) return;
  // One chain object reused for every packet, and more behind it for batched reads.
  if (rx_chains_.empty()) rx_chains_.resize(1);
  while (!pending_rsts_.empty() || !rx_list_.empty()) {
    DescriptorChain& chain = rx_chains_[0];
    if (!PopRxChain(&chain)) {
      if (broken_) return;
      if (rx_queue_->EnableNotification()) continue;
      return;  // the guest's next RX buffer notifies the queue
    }
    if (!pending_rsts_.empty()) {
      WriteRx(chain, pending_rsts_.front(), 0);
      pending_rsts_.pop_front();
      continue;
    }
    const Key key = rx_list_.front();
    rx_list_.pop_front();
    auto it = conns_.find(key);
    if (it == conns_.end()) {
      rx_queue_->UndoPop();
      continue;
    }
    Connection& conn = *it->second;
    conn.in_rx_list = false;
    if (!FillRx(conn, chain)) rx_queue_->UndoPop();
    if (broken_) return;
    if (conn.dead) {
      ResetConnection(key, true);
      continue;
    }
    // Round robin: a connection with more to send goes to the back.
    if (conn.want_request || conn.want_response || conn.want_credit_update ||
        conn.want_credit_request || conn.want_data) {
      WantRx(conn);
    }
    UpdateInterest(conn);
  }
}

bool VsockDevice::FillRx(Connection& conn, const DescriptorChain& chain) {
  auto send = [&](Op op, std::uint32_t flags = 0) {
    Header h = ReplyHeader(conn, op);
    h.flags = flags;
    conn.last_fwd_cnt_sent = conn.fwd_cnt;
    WriteRx(chain, h, 0);
    return true;
  };
  if (conn.want_request) {
    conn.want_request = false;
    return send(Op::kRequest);
  }
  if (conn.want_response) {
    conn.want_response = false;
    return send(Op::kResponse);
  }
  if (conn.want_credit_update) {
    conn.want_credit_update = false;
    return send(Op::kCreditUpdate);
  }
  if (conn.want_credit_request) {
    conn.want_credit_request = false;
    return send(Op::kCreditRequest);
  }
  if (conn.want_data) {
    conn.want_data = false;
    if (conn.state != Connection::State::kEstablished || conn.guest_shut_rcv || conn.host_eof) {
      return false;
    }
    const std::uint32_t credit = conn.PeerFreeCredit();
    if (credit == 0) return false;  // read again when the guest's credit update arrives
    const ssize_t n = ReadHostData(conn, credit);
    if (n > 0 || broken_) return n > 0;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
    if (n < 0) {
      conn.dead = true;  // ECONNRESET and the like: the host peer is gone
      return false;
    }
    // EOF. A peer that closed outright also reports POLLHUP; one that only shut down its
    // sending side can still take data, which the guest may go on sending.
    conn.host_eof = true;
    pollfd pfd{conn.sock.Get(), POLLOUT, 0};
    const bool hung_up = ::poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLHUP) != 0;
    std::uint32_t flags = kShutdownSend;
    if (hung_up) {
      flags |= kShutdownRcv;
      conn.state = Connection::State::kClosing;
      conn.DropTx();
    }
    return send(Op::kShutdown, flags);
  }
  return false;
}

ssize_t VsockDevice::ReadHostData(Connection& conn, std::uint32_t credit) {
  // Gather the payload areas of rx_chains_[0] (popped by ProcessRx) and of up to
  // conn.rx_batch - 1 more chains, within the guest's credit, for one readv. Linux's guest
  // posts 4 KiB buffers, so one readv per buffer would cost a syscall per 4 KiB.
  std::uint64_t budget = std::min<std::uint64_t>(credit, kMaxRxBatchBytes);
  rx_iovs_.clear();
  rx_rooms_.clear();
  std::size_t chains = 0;
  std::uint64_t total = 0;
  while (budget > 0 && chains < conn.rx_batch) {
    if (chains == rx_chains_.size()) rx_chains_.emplace_back();
    DescriptorChain& chain = rx_chains_[chains];
    if (chains > 0 && !PopRxChain(&chain)) break;  // none posted, or the driver broke the ring
    std::uint64_t room =
        std::min<std::uint64_t>({chain.writable_bytes - kHeaderSize, budget, kMaxPayload});
    const std::size_t had = rx_iovs_.size();
    if (room == 0 || !AppendWritableIoVecs(chain, room, &rx_iovs_)) {
      rx_iovs_.resize(had);
      if (chains > 0) rx_queue_->UndoPop();
      break;
    }
    if (rx_iovs_.size() > kMaxIov) {
      if (chains > 0) {
        rx_iovs_.resize(had);
        rx_queue_->UndoPop();
        break;
      }
      // A first chain of more pieces than readv takes is filled as far as they reach.
      rx_iovs_.resize(kMaxIov);
      room = 0;
      for (const iovec& iov : rx_iovs_) room += iov.iov_len;
    }
    rx_rooms_.push_back(static_cast<std::uint32_t>(room));
    budget -= room;
    total += room;
    ++chains;
  }
  ssize_t n = -1;
  errno = EAGAIN;
  if (chains > 0 && !broken_) {
    do {
      n = ::readv(conn.sock.Get(), rx_iovs_.data(), static_cast<int>(rx_iovs_.size()));
    } while (n < 0 && errno == EINTR);
  }
  // Every chain gets a packet in order until the bytes run out; the ones left over go back
  // to the ring, last popped first (ProcessRx puts back the first one when nothing was read).
  std::size_t used = 0;
  std::uint64_t left = n > 0 ? static_cast<std::uint64_t>(n) : 0;
  for (; used < chains && left > 0; ++used) {
    const auto len = static_cast<std::uint32_t>(std::min<std::uint64_t>(rx_rooms_[used], left));
    conn.rx_cnt += len;
    PublishRx(rx_chains_[used], ReplyHeader(conn, Op::kRw), len);
    left -= len;
  }
  // Counted once per read: the counters are atomics, too dear for every 4 KiB.
  if (used > 0) {
    metrics_.rx_packets->Add(used);
    metrics_.rx_bytes->Add(static_cast<std::uint64_t>(n));
  }
  for (std::size_t i = std::max<std::size_t>(used, 1); i < chains; ++i) rx_queue_->UndoPop();
  if (n <= 0) return n;
  conn.last_fwd_cnt_sent = conn.fwd_cnt;
  if (conn.PeerFreeCredit() == 0 && !conn.credit_requested) {
    // The guest's buffer is full: ask how far it has read, so that its CREDIT_UPDATE lets
    // the socket be read again.
    conn.credit_requested = true;
    conn.want_credit_request = true;
  }
  // A read that filled every buffer means the socket probably holds more: the connection
  // stays in the RX list (round robin with the others) and reads again, twice as many
  // buffers at once, instead of going back into the EventSet and waiting for the loop (two
  // epoll_ctl calls and a loop turn per read otherwise). A short read drained the socket:
  // the next batch is as large as this one needed, so a trickle of small messages does not
  // pop and put back many buffers for each.
  if (static_cast<std::uint64_t>(n) == total) {
    conn.want_data = true;
    conn.rx_batch = std::min<std::size_t>(conn.rx_batch * 2, kMaxRxBatchChains);
  } else {
    conn.rx_batch = used;
  }
  return n;
}

void VsockDevice::WriteRx(const DescriptorChain& chain, const Header& header,
                          std::uint32_t payload) {
  PublishRx(chain, header, payload);
  metrics_.rx_packets->Add();
}

void VsockDevice::PublishRx(const DescriptorChain& chain, Header header, std::uint32_t payload) {
  header.len = payload;
  // Checked by the caller: the chain is writable and holds at least a header. The usual
  // layout (Linux's: header and payload in one buffer) is encoded in place.
  const std::span<std::uint8_t> first = chain.writable().front().host;
  if (first.size() >= kHeaderSize) {
    header.EncodeTo(first.first<kHeaderSize>());
  } else {
    (void)chain.CopyToWritable(0, header.Encode());
  }
  rx_queue_->AddUsed(chain.head, static_cast<std::uint32_t>(kHeaderSize) + payload);
}

// --- Event queue -------------------------------------------------------------------------------

void VsockDevice::ProcessEventQueue() {
  if (!pending_transport_reset_ || !event_queue_ || broken_) return;
  for (;;) {
    auto popped = event_queue_->Pop();
    if (!popped.ok()) return MarkBroken(popped.status());
    if (!popped->has_value()) {
      if (event_queue_->EnableNotification()) continue;
      return;  // delivered when the guest adds an event buffer
    }
    const DescriptorChain& chain = **popped;
    const std::uint32_t id = kEventTransportReset;
    if (chain.readable_count != 0 ||
        !chain.CopyToWritable(0, std::span(reinterpret_cast<const std::uint8_t*>(&id),
                                           sizeof(id)))) {
      return MarkBroken(absl::InvalidArgumentError(
          absl::StrCat("event chain ", chain.head, " cannot hold a virtio_vsock_event")));
    }
    event_queue_->AddUsed(chain.head, sizeof(id));
    pending_transport_reset_ = false;
    return;
  }
}

void VsockDevice::InterruptIfNeeded() {
  if (broken_ || signals_ == nullptr) return;
  bool needed = false;
  for (std::optional<Queue>* q : {&rx_queue_, &tx_queue_, &event_queue_}) {
    if (q->has_value() && (*q)->NeedsInterrupt()) needed = true;
  }
  if (needed) signals_->SignalUsedBuffer();
}

void VsockDevice::MarkBroken(const absl::Status& why) {
  metrics_.invalid_chains->Add();
  EMBER_LOG(kWarn) << name() << ": driver error, device needs reset: " << why;
  broken_ = true;
  if (signals_ != nullptr) signals_->MarkNeedsReset();
}

}  // namespace ember::virtio::vsock
