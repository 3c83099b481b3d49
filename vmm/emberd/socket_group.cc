#include "vmm/emberd/socket_group.h"

#include <grp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include <grpcpp/server_posix.h>

#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/emberd/unix_socket.h"

namespace ember::emberd {

absl::StatusOr<PeerCredentials> ReadPeerCredentials(int fd) {
  ucred cred{};
  socklen_t length = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) {
    return base::ErrnoError("getsockopt(SO_PEERCRED)", "an API connection");
  }
  PeerCredentials peer{cred.pid, cred.uid, cred.gid, {}};
  peer.groups.resize(64);
  for (;;) {
    socklen_t bytes = static_cast<socklen_t>(peer.groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, peer.groups.data(), &bytes) == 0) {
      peer.groups.resize(bytes / sizeof(gid_t));
      return peer;
    }
    // ERANGE: `bytes` now says how much the list needs.
    if (errno != ERANGE || bytes <= peer.groups.size() * sizeof(gid_t)) {
      return base::ErrnoError("getsockopt(SO_PEERGROUPS)", "an API connection");
    }
    peer.groups.resize(bytes / sizeof(gid_t));
  }
}

bool PeerMayCall(const PeerCredentials& peer, std::optional<gid_t> group, uid_t owner) {
  if (peer.uid == 0 || peer.uid == owner) return true;
  return group && (peer.gid == *group ||
                   std::find(peer.groups.begin(), peer.groups.end(), *group) != peer.groups.end());
}

absl::StatusOr<gid_t> ResolveGroup(const std::string& name_or_gid) {
  gid_t gid = 0;
  auto [end, ec] = std::from_chars(name_or_gid.data(), name_or_gid.data() + name_or_gid.size(),
                                   gid);
  if (!name_or_gid.empty() && ec == std::errc() &&
      end == name_or_gid.data() + name_or_gid.size()) {
    return gid;
  }
  group entry{};
  group* found = nullptr;
  std::vector<char> buffer(16384);
  int err = ::getgrnam_r(name_or_gid.c_str(), &entry, buffer.data(), buffer.size(), &found);
  if (err != 0) return base::ErrnoError(err, "getgrnam_r", name_or_gid);
  if (found == nullptr) {
    return absl::InvalidArgumentError("--socket-group: no group \"" + name_or_gid + "\"");
  }
  return found->gr_gid;
}

absl::StatusOr<std::unique_ptr<GroupSocketServer>> GroupSocketServer::Listen(
    const std::string& path, std::optional<gid_t> group) {
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd listener, ListenUnix(path));  // 0600 from the start
  // ListenUnix's backlog suits one VMM's control socket; the API's clients come in crowds.
  if (::listen(listener.Get(), SOMAXCONN) != 0) return base::ErrnoError("listen", path);
  if (group) {
    if (::chown(path.c_str(), 0, *group) != 0) return base::ErrnoError("chown", path);
    if (::chmod(path.c_str(), 0660) != 0) return base::ErrnoError("chmod", path);
  }
  base::UniqueFd wakeup(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wakeup) return base::ErrnoError("eventfd", "the API socket's accept loop");
  return std::unique_ptr<GroupSocketServer>(
      new GroupSocketServer(std::move(listener), std::move(wakeup), group));
}

GroupSocketServer::~GroupSocketServer() {
  if (!thread_.joinable()) return;
  std::uint64_t one = 1;
  (void)!::write(wakeup_.Get(), &one, sizeof(one));
  thread_.join();
}

void GroupSocketServer::Serve(grpc::Server* server) {
  thread_ = std::thread([this, server] { AcceptLoop(server); });
}

void GroupSocketServer::AcceptLoop(grpc::Server* server) {
  bool starved = false;  // accept failed last time: logged once, until one succeeds
  for (;;) {
    pollfd fds[2] = {{listener_.Get(), POLLIN, 0}, {wakeup_.Get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      EMBER_LOG(kError) << "emberd: poll on the API socket: " << std::strerror(errno);
      return;
    }
    if (fds[1].revents != 0) return;
    base::UniqueFd connection(::accept4(listener_.Get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!connection) {
      const int error = errno;
      if (error == EAGAIN || error == EINTR || error == ECONNABORTED) continue;
      if (!starved) {
        EMBER_LOG(kWarn) << "emberd: accept on the API socket: " << std::strerror(error)
                         << (error == EMFILE || error == ENFILE || error == ENOBUFS ||
                                     error == ENOMEM
                                 ? "; new connections wait until some close"
                                 : "");
      }
      // The connection stays in the backlog and the listener readable: without a pause this
      // loop would spin (and log) as fast as it can until fds or memory free up. The wakeup
      // still ends the pause at once.
      starved = true;
      pollfd wake{wakeup_.Get(), POLLIN, 0};
      (void)::poll(&wake, 1, 100);
      continue;
    }
    starved = false;
    absl::StatusOr<PeerCredentials> peer = ReadPeerCredentials(connection.Get());
    if (!peer.ok()) {
      EMBER_LOG(kWarn) << "emberd: API connection closed: " << peer.status().message();
      continue;
    }
    if (!PeerMayCall(*peer, group_, owner_)) {
      EMBER_LOG(kWarn) << "emberd: API connection from pid " << peer->pid << " (uid "
                       << peer->uid << ", gid " << peer->gid << ") refused: neither root"
                       << (owner_ != 0 ? ", emberd's own uid" : "")
                       << (group_ ? " nor a member of the socket's group " +
                                        std::to_string(*group_)
                                  : std::string(" (no --socket-group)"));
      continue;
    }
    // gRPC owns the fd from here.
    grpc::AddInsecureChannelFromFd(server, connection.Release());
  }
}

}  // namespace ember::emberd
