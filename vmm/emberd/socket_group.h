#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::emberd {

// Who is at the other end of a Unix socket connection, as the kernel recorded it when the
// peer called connect() (SO_PEERCRED, SO_PEERGROUPS): it cannot be changed afterwards by the
// peer, so one check per connection covers every call made on it.
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary
};

// Reads the credentials of `fd`'s peer.
[[nodiscard]] absl::StatusOr<PeerCredentials> ReadPeerCredentials(int fd);

// Whether `peer` may call emberd's API: root, emberd's own uid `owner`, or, on a socket
// delegated to `group`, a member of it (as its primary or a supplementary group).
[[nodiscard]] bool PeerMayCall(const PeerCredentials& peer, std::optional<gid_t> group,
                               uid_t owner = 0);

// A group given by name or number (emberd --socket-group), resolved at start-up.
[[nodiscard]] absl::StatusOr<gid_t> ResolveGroup(const std::string& name_or_gid);

// emberd's API socket: 0600, or 0660 root:group when the operator delegates it to a group
// (--socket-group), and each accepted connection is handed to the gRPC server only when its
// peer passes PeerMayCall; others are logged and closed. The file mode keeps strangers from
// connecting at all; the peer check holds even where the mode does not (a changed mode, a
// caller with CAP_DAC_OVERRIDE but not uid 0). Created before emberd's seccomp filter; one
// thread accepts.
class GroupSocketServer {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<GroupSocketServer>> Listen(
      const std::string& path, std::optional<gid_t> group);
  // Stops accepting (connections already handed over stay with `server`).
  ~GroupSocketServer();
  GroupSocketServer(const GroupSocketServer&) = delete;
  GroupSocketServer& operator=(const GroupSocketServer&) = delete;

  // Starts the accepting thread; `server` (started, may have no listening port of its own)
  // must outlive this object.
  void Serve(grpc::Server* server);

 private:
  GroupSocketServer(base::UniqueFd listener, base::UniqueFd wakeup, std::optional<gid_t> group)
      : listener_(std::move(listener)), wakeup_(std::move(wakeup)), group_(group) {}
  void AcceptLoop(grpc::Server* server);

  base::UniqueFd listener_;
  base::UniqueFd wakeup_;  // eventfd: ends AcceptLoop
  const std::optional<gid_t> group_;
  const uid_t owner_ = ::geteuid();  // emberd's own uid: the socket file's owner
  std::thread thread_;
};

}  // namespace ember::emberd
