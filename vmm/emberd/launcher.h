#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::emberd {

// What one ember-vmm needs to start. Fds are borrowed for the Launch call.
struct LaunchSpec {
  std::string vm_id;
  std::string vm_dir;               // the VM's state directory
  std::vector<std::string> vmm_args;  // ember-vmm's arguments, without --control-fd
  int control_listen_fd = -1;       // becomes ember-vmm's --control-fd
  int stderr_fd = -1;               // ember-vmm's log
};

// How emberd starts an ember-vmm. The seam for the jailer: a JailerLauncher will exec
// ember-jailer (chroot into the VM dir, uid/gid, cgroups, seccomp) with the same spec;
// emberd's supervision only needs the pid it returns.
class VmmLauncher {
 public:
  virtual ~VmmLauncher() = default;
  // Starts the process in its own session; returns its pid (a child of emberd).
  [[nodiscard]] virtual absl::StatusOr<pid_t> Launch(const LaunchSpec& spec) = 0;
};

// Execs ember-vmm directly (no jail), as emberd's child.
class DirectLauncher : public VmmLauncher {
 public:
  explicit DirectLauncher(std::string vmm_binary) : vmm_binary_(std::move(vmm_binary)) {}
  [[nodiscard]] absl::StatusOr<pid_t> Launch(const LaunchSpec& spec) override;

 private:
  std::string vmm_binary_;
};

}  // namespace ember::emberd
