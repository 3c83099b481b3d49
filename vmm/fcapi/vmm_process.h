#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/vm_config.pb.h"
#include "ember/v1/vmm_control.pb.h"
#include "vmm/base/unique_fd.h"
#include "vmm/control/frame.h"
#include "vmm/fcapi/launcher.h"

// The real VMM behind the API front: one ember-vmm child driven over its control channel
// (proto/ember/v1/vmm_control.proto), exactly as emberd drives it.
namespace ember::fcapi {

class VmmProcess {
 public:
  // Starts ember-vmm with `args` plus --control-fd (and, for a boot, --config-proto with
  // `config` written to a private file), through `launcher`. The control socket and the config file live in a
  // directory of their own, made with mode 0700 under `private_parent` and removed once the
  // VMM has connected and read them, so no other process can take the channel over. The child
  // gets SIGKILL if this process dies (launcher.h). Returns once the VMM said HELLO (its VM is built);
  // a VMM that could not build its VM is InvalidArgument (the user's input) or Internal, with
  // the VMM's one-line reason.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<VmmProcess>> Start(
      std::vector<std::string> args, const v1::VmConfig* config,
      const std::string& private_parent, Launcher& launcher);
  ~VmmProcess();  // kills and reaps a VMM still running
  VmmProcess(const VmmProcess&) = delete;
  VmmProcess& operator=(const VmmProcess&) = delete;

  // Sends `request` (its id is set here) and waits up to `timeout_ms` for its response,
  // handling events that come first. A response with a non-zero code is returned as that
  // status (InvalidArgument, FailedPrecondition, NotFound...) with the VMM's message. `fd`
  // (borrowed), if not -1, goes with the request (SCM_RIGHTS): a drive swap's new file.
  [[nodiscard]] absl::StatusOr<v1::ControlResponse> Call(v1::ControlRequest request,
                                                         int timeout_ms, int fd = -1);

  // The control connection, for the caller's poll loop: when it is readable, call Drain().
  [[nodiscard]] int fd() const { return conn_.Get(); }
  // Reads the events waiting (without blocking). Returns the VMM's exit code once it has
  // ended (EXITED, or the connection closed and the child reaped); nullopt while it runs.
  [[nodiscard]] std::optional<int> Drain();

  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] v1::VmmStatus::State state() const { return state_; }
  [[nodiscard]] std::uint64_t boot_time_us() const { return boot_time_us_; }
  // Sends `signal` to the VMM and waits for it to end; returns its exit code.
  int Terminate(int signal);

 private:
  VmmProcess() = default;
  // Handles one message that is not the awaited response; false if it was EXITED.
  void HandleEvent(const v1::ControlEvent& event);
  [[nodiscard]] absl::StatusOr<v1::VmmMessage> ReadMessage(int timeout_ms);
  int Reap();

  pid_t pid_ = -1;
  base::UniqueFd conn_;
  control::FrameReader reader_;
  std::uint64_t next_id_ = 1;
  v1::VmmStatus::State state_ = v1::VmmStatus::STATE_UNSPECIFIED;
  std::uint64_t boot_time_us_ = 0;
  std::optional<int> exit_code_;
};

}  // namespace ember::fcapi
