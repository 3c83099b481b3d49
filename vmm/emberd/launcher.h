#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::emberd {

// What one ember-vmm needs to start. Fds are borrowed for the Launch call.
struct LaunchSpec {
  std::string vm_id;
  std::string vm_dir;                 // the VM's state directory
  std::vector<std::string> vmm_args;  // ember-vmm's arguments, without --control-fd
  int control_listen_fd = -1;         // becomes ember-vmm's --control-fd
  int stderr_fd = -1;                 // ember-vmm's log
};

// How emberd starts an ember-vmm. The seam for the jailer: a jailed launch execs ember-jailer
// (chroot into the VM dir, uid/gid, cgroups, seccomp) with the same spec; emberd's supervision
// only needs the pid it returns.
class VmmLauncher {
 public:
  virtual ~VmmLauncher() = default;
  // Starts the process in its own session; returns its pid (a child of emberd).
  [[nodiscard]] virtual absl::StatusOr<pid_t> Launch(const LaunchSpec& spec) = 0;
};

// Starts ember-vmm through a fork server: a small helper process forked from emberd at
// start-up, before emberd has threads or its seccomp filter (sandbox.h). A seccomp filter
// survives fork and exec, so an ember-vmm spawned by emberd itself would run under emberd's
// allowlist on top of its own, and emberd's would have to allow execve and everything ember-vmm
// does before its own filters (KVM ioctls, io_uring, executable mappings). Spawned by the
// unfiltered helper, ember-vmm starts clean, and emberd's filter need not allow exec at all.
//
// The helper only ever execs the binary it was started with; emberd sends it the arguments and
// the two fds over a socketpair. It forks a short-lived middle process that posix_spawns
// ember-vmm (own session, default signals) and exits, and emberd is a child subreaper, so
// ember-vmm is re-parented to emberd: Launch's pid is emberd's child, whose exit status emberd
// reaps with waitid as before. The helper exits when emberd's end of the socketpair closes (or
// emberd dies: PR_SET_PDEATHSIG).
class ForkServerLauncher : public VmmLauncher {
 public:
  // Forks the helper for `binary`. Called by emberd's main thread while it is still the only
  // thread (fails otherwise: the helper would inherit locks other threads hold); makes emberd
  // a child subreaper.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ForkServerLauncher>> Start(
      std::string binary);

  // Any thread; launches are serialised (one spawn takes about a millisecond).
  [[nodiscard]] absl::StatusOr<pid_t> Launch(const LaunchSpec& spec) override;

  [[nodiscard]] pid_t helper_pid() const { return helper_pid_; }

 private:
  ForkServerLauncher(std::string binary, base::UniqueFd socket, pid_t helper_pid)
      : binary_(std::move(binary)), socket_(std::move(socket)), helper_pid_(helper_pid) {}

  std::string binary_;  // for messages; the helper holds its own copy
  std::mutex mu_;
  base::UniqueFd socket_;  // guarded by mu_: one request and its reply at a time
  pid_t helper_pid_;
};

}  // namespace ember::emberd
