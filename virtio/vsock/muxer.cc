#include "virtio/vsock/muxer.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "vmm/base/logging.h"
#include "vmm/base/socket_file.h"
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
// Host-side ports the device allocates for host-initiated connections start here, above
// any port a guest listens on in practice.
constexpr std::uint32_t kFirstHostPort = 1u << 30;

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

absl::StatusOr<std::unique_ptr<Muxer>> Muxer::Create(const VsockConfig& config,
                                                     VsockMetrics& metrics) {
  const std::string what = absl::StrCat("vsock ", config.vsock_id);
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
  auto cleanup_on_error = [&](absl::Status status) {
    ::unlink(config.uds_path.c_str());
    return status;
  };
  if (::listen(listener.Get(), 128) != 0) {
    return cleanup_on_error(base::ErrnoError("listen", config.uds_path));
  }
  // The directory the listener is bound in, held: the guest's connections go to sockets in
  // this very directory, whatever its path leads to later (ConnectToHostPort).
  const std::size_t slash = config.uds_path.find_last_of('/');
  const std::string dir_path = slash == std::string::npos ? "."
                               : slash == 0               ? "/"
                                                          : config.uds_path.substr(0, slash);
  base::UniqueFd dir(::open(dir_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) {
    return cleanup_on_error(
        base::ErrnoError("open", absl::StrCat(what, ": directory ", dir_path)));
  }
  auto events = EventSet::Create();
  if (!events.ok()) return cleanup_on_error(events.status());
  auto wake = base::EventFd::Create();
  if (!wake.ok()) return cleanup_on_error(wake.status());
  absl::Status added = events->Add(listener.Get(), EPOLLIN, Token(kKindListener, listener.Get()));
  if (added.ok()) added = events->Add(wake->Get(), EPOLLIN, Token(kKindWake, wake->Get()));
  if (!added.ok()) return cleanup_on_error(added);
  auto muxer = std::unique_ptr<Muxer>(new Muxer(config, metrics, std::move(listener),
                                                std::move(events).value(),
                                                std::move(wake).value(), std::move(dir)));
  muxer->port_prefix_ = config.uds_path.substr(slash == std::string::npos ? 0 : slash + 1) + "_";
  muxer->proc_fds_ = ::access("/proc/self/fd", X_OK) == 0;
  return muxer;
}

Muxer::Muxer(const VsockConfig& config, VsockMetrics& metrics, base::UniqueFd listener,
             EventSet events, base::EventFd wake, base::UniqueFd dir)
    : config_(config),
      metrics_(metrics),
      listener_(std::move(listener)),
      dir_(std::move(dir)),
      events_(std::move(events)),
      wake_(std::move(wake)) {}

Muxer::~Muxer() { ::unlink(config_.uds_path.c_str()); }

const Connection* Muxer::Find(const Key& key) const {
  auto it = conns_.find(key);
  return it == conns_.end() ? nullptr : &it->second.conn;
}

void Muxer::ProcessEvents() {
  std::array<epoll_event, 64> ready{};
  const std::size_t n = events_.Poll(ready);
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
}

// --- Host peers ----------------------------------------------------------------------------------

void Muxer::AcceptHostConnections() {
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
    absl::Status added = events_.Add(fd, EPOLLIN, Token(kKindHandshake, fd));
    if (!added.ok()) {
      EMBER_LOG(kWarn) << name() << ": " << added;
      continue;
    }
    handshakes_.emplace(fd, Handshake{std::move(sock), {}});
  }
}

void Muxer::ProcessHandshake(int fd) {
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
  while (host_ports_.contains(local) || local < kFirstHostPort) {
    local = local < kFirstHostPort ? kFirstHostPort : local + 1;
  }
  next_host_port_ = local + 1;
  if (conns_.contains(Key{local, *port})) return fail("port pair in use");
  base::UniqueFd sock = std::move(hs.sock);
  events_.Remove(fd);
  handshakes_.erase(it);
  host_ports_.insert(local);
  // Watched at once: what the host sends before the guest accepts is read once it has.
  Add(Connection::FromHost(std::move(sock), config_.guest_cid, local, *port));
}

void Muxer::ProcessSocket(int fd, std::uint32_t events) {
  auto by_fd = conn_by_fd_.find(fd);
  if (by_fd == conn_by_fd_.end()) return;
  const Key key = by_fd->second;
  Entry& entry = conns_.at(key);
  const bool readable = (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
  const bool closed = (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
  Apply(key, entry.conn.OnHostReady(readable, closed));
}

// --- Guest packets -------------------------------------------------------------------------------

void Muxer::OnGuestPacket(const Header& h, const DescriptorChain& chain) {
  auto malformed = [&](const char* why, bool answer) {
    metrics_.malformed_packets->Add();
    EMBER_LOG(kDebug) << name() << ": malformed packet from the guest (" << why << "), op "
                      << h.op << " " << h.src_port << "->" << h.dst_port;
    if (!answer) return;
    // The guest's socket may be waiting on this packet; an RST ends the wait.
    const Key key{h.dst_port, h.src_port};
    if (conns_.contains(key)) {
      Remove(key, true);
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

  if (op == Op::kRequest) return OnGuestRequest(h);
  const Key key{h.dst_port, h.src_port};
  auto it = conns_.find(key);
  if (it == conns_.end()) {
    // Late packets of a connection already gone: answer with RST, as the spec asks, except
    // to an RST.
    if (op != Op::kRst) QueueRst(RstFor(h));
    return;
  }
  const Connection::Outcome out = it->second.conn.OnGuestPacket(h, chain);
  if (out.fault == Connection::Fault::kMalformed) metrics_.malformed_packets->Add();
  if (out.fault == Connection::Fault::kCreditOverrun) metrics_.credit_violations->Add();
  if (out.accepted_bytes != 0) metrics_.tx_bytes->Add(out.accepted_bytes);
  Apply(key, out.verdict);
}

void Muxer::OnGuestRequest(const Header& h) {
  const Key key{h.dst_port, h.src_port};
  if (conns_.contains(key)) {
    metrics_.malformed_packets->Add();
    return Remove(key, true);
  }
  if (conns_.size() >= kMaxConnections) {
    metrics_.host_connect_fails->Add();
    return QueueRst(RstFor(h));
  }
  const std::string path = absl::StrCat(config_.uds_path, "_", h.dst_port);
  base::UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  // A Unix stream connect either completes at once or fails (EAGAIN: the listener's backlog
  // is full); it never blocks the loop with SOCK_NONBLOCK.
  if (!sock || ConnectToHostPort(sock.Get(), h.dst_port, path) != 0) {
    metrics_.host_connect_fails->Add();
    EMBER_LOG(kDebug) << name() << ": guest connect to host port " << h.dst_port << ": "
                      << base::ErrnoError("connect", path);
    return QueueRst(RstFor(h));
  }
  Add(Connection::FromGuest(std::move(sock), h));
}

int Muxer::ConnectToHostPort(int sock, std::uint32_t port, const std::string& path) const {
  // Only a socket that is itself at <uds_path>_<port> in the directory held since Create: a
  // symlink planted at that name (by whoever can write the directory) would lead the guest to
  // any socket on the host, emberd's own included.
  const std::string name = absl::StrCat(port_prefix_, port);
  if (proc_fds_) return base::ConnectNoFollow(sock, dir_.Get(), name);
  // No /proc (a jail that mounts none, as ember-jailer's): checked without following, then
  // connected by name. A symlink swapped in between the two would still be followed, but
  // only inside the jail's root (pivot_root leaves nothing of the host above it), which holds
  // nothing but the VMM's own files.
  struct stat st {};
  if (::fstatat(dir_.Get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return -1;
  if (!S_ISSOCK(st.st_mode)) {
    errno = S_ISLNK(st.st_mode) ? ELOOP : ENOTSOCK;
    return -1;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), std::min(path.size(), sizeof(addr.sun_path) - 1));
  // sockaddr_un is the address type connect() takes through its generic pointer.
  return ::connect(sock, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
}

// --- Connections -------------------------------------------------------------------------------

void Muxer::Add(Connection conn) {
  const Key key{conn.local_port(), conn.peer_port()};
  const int fd = conn.fd();
  Entry& entry = conns_.emplace(key, Entry{std::move(conn)}).first->second;
  conn_by_fd_[fd] = key;
  // Edge-triggered, for reading and writing alike, for the connection's whole life: the
  // connection remembers what the socket reported (Connection::OnHostReady) and acts when it
  // can, so the interest never changes. A level-triggered watch had to be paused while the
  // guest had no credit or RX buffer and resumed after, two epoll_ctl calls per read batch,
  // and an EPOLLOUT added and dropped around each write the socket did not take at once.
  // HUP and ERR come as edges too, so a peer gone while the device cannot act does not wake
  // the loop over and over.
  absl::Status added =
      events_.Add(fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, Token(kKindConnection, fd));
  if (added.ok()) {
    entry.watched = true;
  } else {
    EMBER_LOG(kError) << name() << ": " << added;
  }
  metrics_.conns_added->Add();
  Apply(key, Connection::Verdict::kKeep);
}

void Muxer::Apply(const Key& key, Connection::Verdict verdict) {
  switch (verdict) {
    case Connection::Verdict::kReset:
      return Remove(key, true);
    case Connection::Verdict::kForget:
      return Remove(key, false);
    case Connection::Verdict::kKeep:
      break;
  }
  Entry& entry = conns_.at(key);
  if (entry.conn.HasPendingRx()) WantRx(key, entry);
}

void Muxer::WantRx(const Key& key, Entry& entry) {
  if (entry.waiting_rx) return;
  entry.waiting_rx = true;
  rx_wait_.push_back(key);
}

void Muxer::Remove(const Key& key, bool tell_guest) {
  auto it = conns_.find(key);
  if (it == conns_.end()) return;
  Entry& entry = it->second;
  if (tell_guest) {
    metrics_.conns_reset->Add();
    QueueRst(entry.conn.ReplyHeader(Op::kRst));
  }
  if (entry.watched) events_.Remove(entry.conn.fd());
  // At most one entry per live connection, so the search is bounded by kMaxConnections, and
  // only a connection that goes while waiting pays it.
  if (entry.waiting_rx) rx_wait_.erase(std::find(rx_wait_.begin(), rx_wait_.end(), key));
  conn_by_fd_.erase(entry.conn.fd());
  if (entry.conn.host_initiated()) host_ports_.erase(entry.conn.local_port());
  conns_.erase(it);
  metrics_.conns_removed->Add();
}

void Muxer::CloseAll() {
  while (!conns_.empty()) Remove(conns_.begin()->first, false);
  rx_wait_.clear();
  pending_rsts_.clear();
}

// --- Packets for the guest -----------------------------------------------------------------------

Header Muxer::RstFor(const Header& to) const {
  Header h;
  h.src_cid = kHostCid;
  h.dst_cid = config_.guest_cid;
  h.src_port = to.dst_port;
  h.dst_port = to.src_port;
  h.type = kTypeStream;
  h.op = static_cast<std::uint16_t>(Op::kRst);
  return h;
}

void Muxer::QueueRst(const Header& rst) {
  if (pending_rsts_.size() >= kMaxPendingRsts) {
    metrics_.rx_rst_dropped->Add();
    return;
  }
  pending_rsts_.push_back(rst);
}

bool Muxer::FillRx(RxBuffers& rx) {
  if (!pending_rsts_.empty()) {
    rx.SendControl(pending_rsts_.front());
    pending_rsts_.pop_front();
    return true;
  }
  if (rx_wait_.empty()) return false;
  const Key key = rx_wait_.front();
  rx_wait_.pop_front();
  auto it = conns_.find(key);
  if (it == conns_.end()) return false;
  Entry& entry = it->second;
  entry.waiting_rx = false;
  const Connection::RxOutcome out = entry.conn.FillRx(rx);
  if (rx.broken()) return out.used;
  // Round robin: a connection with more to send goes to the back.
  Apply(key, out.verdict);
  return out.used;
}

}  // namespace ember::virtio::vsock
