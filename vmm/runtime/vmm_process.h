#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ember/v1/vm_config.pb.h"
#include "ember/v1/vmm_control.pb.h"
#include "vmm/base/unique_fd.h"
#include "vmm/control/frame.h"

namespace ember::runtime {

// The fd number ember-vmm finds its control socket at.
inline constexpr int kVmmControlFd = 3;

// How to start one container's ember-vmm.
struct VmmLaunch {
  std::string vmm_path;     // the ember-vmm binary
  std::string config_path;  // where the binary VmConfig is written
  std::string output_path;  // the VMM's stdout and stderr: serial console and log
  std::string netns_path;   // "" none; else the VMM runs in that network namespace
  // The container's 0700 directory: the control listener is made there.
  std::string control_dir;
  // Jailed: ember-jailer's argv up to "--" (jail.h), which execs ember-vmm in place, the
  // config's path as the jailed VMM sees it, and the config file readable by the jail's uid
  // (it holds paths only). Empty: ember-vmm is started directly.
  std::vector<std::string> jailer_argv;
  std::string config_in_jail;
  int hello_timeout_ms = 30'000;
};

// One ember-vmm, the supervisor's child, driven over its control channel
// (proto/ember/v1/vmm_control.proto) through a Unix socket in the container's directory that
// only the supervisor reaches (unlinked once it has connected). It dies with the supervisor (PR_SET_PDEATHSIG). Owned by the supervisor's one
// thread.
class VmmProcess {
 public:
  // Writes `config`, starts ember-vmm with --control-fd, and waits for its HELLO: a VM
  // ember-vmm could not build is its BUILD_FAILED message, as InvalidArgument (bad input) or
  // Internal.
  [[nodiscard]] static absl::StatusOr<VmmProcess> Launch(const VmmLaunch& launch,
                                                         const v1::VmConfig& config);
  VmmProcess(VmmProcess&& other) noexcept
      : pid_(std::exchange(other.pid_, -1)),
        pidfd_(std::move(other.pidfd_)),
        control_(std::move(other.control_)),
        reader_(std::move(other.reader_)),
        next_id_(other.next_id_),
        exit_code_(other.exit_code_) {}
  VmmProcess& operator=(VmmProcess&&) = delete;
  ~VmmProcess();

  // Control calls: the vCPUs start; pause; resume.
  [[nodiscard]] absl::Status Start();
  [[nodiscard]] absl::Status Pause();
  [[nodiscard]] absl::Status Resume();

  [[nodiscard]] pid_t pid() const { return pid_; }
  // Readable once the VMM has exited (a pidfd); borrowed.
  [[nodiscard]] int exit_fd() const { return pidfd_.Get(); }

  // Ends the VM now (SIGKILL) and reaps it. Idempotent.
  void Kill();
  // Asks the VMM to stop (SIGTERM: it ends the VM and exits 0), waits up to `timeout_ms`,
  // then kills it. Returns its exit code (-1 when a signal ended it).
  int Stop(int timeout_ms);
  // Reaps an exited VMM; its exit code, or -1 when a signal ended it.
  int Reap();

 private:
  VmmProcess(pid_t pid, base::UniqueFd pidfd, base::UniqueFd control)
      : pid_(pid), pidfd_(std::move(pidfd)), control_(std::move(control)) {}
  [[nodiscard]] absl::StatusOr<v1::ControlResponse> Call(v1::ControlRequest request,
                                                         int timeout_ms);

  pid_t pid_ = -1;  // -1 once reaped
  base::UniqueFd pidfd_;
  base::UniqueFd control_;
  control::FrameReader reader_;
  std::uint64_t next_id_ = 1;
  int exit_code_ = -1;
};

}  // namespace ember::runtime
