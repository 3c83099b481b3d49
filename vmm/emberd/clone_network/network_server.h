#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"
#include "vmm/emberd/clone_network/egress_pool.h"
#include "vmm/emberd/clone_network/ipv4.h"

namespace ember::emberd {

struct CloneNetworkServerConfig {
  // Where the clones' namespaces are mounted, one file each (ember-jailer --netns joins them
  // there). emberd's own: everything in it is the server's, and it is emptied at start.
  std::string netns_dir;
  // Egress for the clones that ask for it; unset: they are refused. Its veth prefix and
  // nftables tables (ember_<prefix>...) are the server's too, removed at start.
  std::optional<EgressPoolConfig> egress;
  // Networks of each shape (tap, address, egress) kept made ahead, so that a clone's restore
  // takes one instead of making it.
  unsigned spares = 1;
};

// What a clone's network must be.
struct CloneNetworkShape {
  std::string tap_name;
  std::optional<Ipv4Cidr> tap_address;
  bool egress = false;
};

// A made clone network, as the server reports it.
struct PreparedNetwork {
  std::string id;          // for Release
  std::string netns_path;  // the namespace's mount: ember-jailer --netns, or setns for a VMM
};

// Clone networks for emberd, made in a helper process: emberd's seccomp filter allows neither
// namespaces, nor mounts, nor netlink, so the helper is forked before it (like the fork
// server, launcher.h) and does that work on emberd's requests, one at a time, over a socket
// pair. It holds each network until Release and keeps `spares` of each shape made ahead. At
// start it removes what an earlier server left (its directory's mounts, its veth links and
// tables: an emberd that died mid-way); when emberd closes the socket it tears down every
// network it holds, and when emberd dies it is killed (PR_SET_PDEATHSIG), leaving the rest to
// the next start.
class CloneNetworkServer {
 public:
  // Forks the helper. Called by emberd's main thread while it is the only thread, as root.
  // The helper's start-up clean-up is done when this returns.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<CloneNetworkServer>> Start(
      CloneNetworkServerConfig config);
  // Ends the requests and waits until the helper has torn down everything and exited.
  ~CloneNetworkServer();

  // A network of `shape`, from the spares when one is ready. Any thread; requests are
  // serialised. Errors are the library's (clone_network.h), e.g. FailedPrecondition for egress
  // this server has no pool for.
  [[nodiscard]] absl::StatusOr<PreparedNetwork> Prepare(const CloneNetworkShape& shape);
  // Tears network `id` down (its clone's VMM should have ended); NotFound for an unknown id.
  [[nodiscard]] absl::Status Release(const std::string& id);

  [[nodiscard]] pid_t helper_pid() const { return helper_pid_; }

 private:
  CloneNetworkServer(base::UniqueFd socket, pid_t helper_pid)
      : socket_(std::move(socket)), helper_pid_(helper_pid) {}
  [[nodiscard]] absl::StatusOr<std::string> Call(const std::string& request);

  std::mutex mu_;
  base::UniqueFd socket_;  // guarded by mu_: one request and its reply at a time
  pid_t helper_pid_;
};

}  // namespace ember::emberd
