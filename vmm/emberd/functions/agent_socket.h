#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::emberd::functions {

// Where a function VM's ember-vmm makes its vsock socket (the agent's uds_path) and where
// emberd reaches it. Unjailed, both are a path in the function's directory. Jailed, the VMM
// sees only its chroot: the socket is a file of the jail's output directory (the one it may
// write), which emberd finds under the jail's root on the host. Immutable; any thread.
class AgentSockets {
 public:
  // `jail_dir`: VmManager's ManagerOptions::jail_dir (<jail_dir>/<vm id>/root is a VM's
  // jail); empty when VMMs run unjailed.
  explicit AgentSockets(std::string jail_dir) : jail_dir_(std::move(jail_dir)) {}

  // The uds_path in the configuration of a VM whose unjailed socket would be `unjailed`.
  [[nodiscard]] std::string ConfigPath(const std::string& unjailed) const;
  // Where emberd finds VM `vm_id`'s socket.
  [[nodiscard]] std::string HostPath(const std::string& vm_id, const std::string& unjailed) const;
  // Jailed only: VM `vm_id`'s jail output directory on the host (where its VMM writes).
  [[nodiscard]] std::string JailOutputDir(const std::string& vm_id) const;
  [[nodiscard]] bool jailed() const { return !jail_dir_.empty(); }

 private:
  std::string jail_dir_;
};

// The VMM's socket at `path`, opened O_PATH without following a symlink and checked to be a
// socket: a jailed VMM owns the directory it lies in, and could otherwise point emberd at any
// socket on the host. FAILED_PRECONDITION when it is something else. Owned by the caller.
[[nodiscard]] absl::StatusOr<base::UniqueFd> OpenAgentSocket(const std::string& path);
// The path emberd connects to for `socket` (OpenAgentSocket's, borrowed): that very socket,
// whatever its name leads to by then, and short enough for a sockaddr_un however deep the
// jail lies.
[[nodiscard]] std::string AgentEndpointPath(const base::UniqueFd& socket);

// Calls `call` (one request to the agent) until it succeeds or `timeout_ms` has passed,
// returning its last error then. An agent is reached only once its guest has run far enough
// (booted, or resumed and past its transport reset): until then connections to it fail.
// Before each retry `alive` says whether the VM still runs; its error ends the wait at once.
[[nodiscard]] absl::Status UntilAgentAnswers(const std::function<absl::Status()>& call,
                                             int timeout_ms,
                                             const std::function<absl::Status()>& alive);

}  // namespace ember::emberd::functions
