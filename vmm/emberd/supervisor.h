#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>

#include "absl/status/statusor.h"
#include "ember/v1/api.pb.h"
#include "ember/v1/vmm_control.pb.h"
#include "vmm/base/unique_fd.h"
#include "vmm/control/frame.h"

namespace ember::emberd {

// One ember-vmm under supervision: its control connection and its process. VmManager's record
// of a VM derives from it, so that one mutex guards the record and the connection; the
// supervisor reports what the VMM says through the On* hooks, called on its thread with `mu`
// held.
class SupervisedVmm {
 public:
  explicit SupervisedVmm(std::string vm_id) : vm_id_(std::move(vm_id)) {}
  virtual ~SupervisedVmm() = default;

  const std::string& vm_id() const { return vm_id_; }
  // Sends SIGKILL to the process, if it is still watched. `mu` held.
  void Kill();
  // Whether the VMM sent its HELLO on the current connection. `mu` held.
  bool hello() const { return hello_; }
  // Whether the process has ended (and the On* hooks have run for the last time). `mu` held.
  bool exited() const { return exited_; }
  // Whether its control connection is open. `mu` held.
  bool connected() const { return static_cast<bool>(control_); }
  // Why ember-vmm could not build the VM, if it said so before exiting. `mu` held.
  const std::optional<v1::BuildFailure>& build_failure() const { return build_failure_; }

  std::mutex mu;
  std::condition_variable cv;  // responses, HELLO, process exit

 protected:
  virtual void OnHello(const v1::VmmStatus& status) = 0;
  virtual void OnState(v1::VmmStatus::State state) = 0;
  virtual void OnBooted(std::uint64_t boot_time_us) = 0;
  // The process ended; `exit` says how.
  virtual void OnExit(const v1::ExitInfo& exit) = 0;

 private:
  friend class Supervisor;

  const std::string vm_id_;
  // All guarded by mu, except reader_ (supervisor thread only).
  bool hello_ = false;
  bool exited_ = false;
  base::UniqueFd control_;  // closed only by the supervisor thread (or Detach)
  base::UniqueFd pidfd_;    // closed only by the supervisor thread
  bool child_ = false;      // emberd spawned it (can read its exit status)
  std::uint64_t next_id_ = 1;
  std::map<std::uint64_t, std::optional<v1::ControlResponse>> responses_;
  std::optional<std::pair<int, std::string>> vmm_exit_;  // from EXITED
  std::optional<v1::BuildFailure> build_failure_;        // from BUILD_FAILED
  control::FrameReader reader_;
};

// Watches every VMM's control socket and pidfd from one thread (an epoll loop), and carries
// requests to them. Any thread may call it.
class Supervisor {
 public:
  // `request_timeout`: how long Call waits for a quick request's answer.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Supervisor>> Create(
      std::chrono::milliseconds request_timeout);
  ~Supervisor();

  // Watches `vmm`'s connected control socket `control` and, with `pid` > 0, its process
  // (`child`: emberd spawned it, so its exit status can be read).
  [[nodiscard]] absl::Status Attach(const std::shared_ptr<SupervisedVmm>& vmm,
                                    base::UniqueFd control, pid_t pid, bool child);
  // Watches the process of a VMM attached without one (a re-attached VMM, once its HELLO
  // named its pid).
  [[nodiscard]] absl::Status WatchProcess(const std::shared_ptr<SupervisedVmm>& vmm, pid_t pid);
  // The same with the process's pidfd (OpenPidfd), opened when its pid was known to be right.
  void WatchProcess(const std::shared_ptr<SupervisedVmm>& vmm, base::UniqueFd pidfd);
  // Stops watching `vmm`'s control socket and closes it. `mu` held.
  void Detach(SupervisedVmm& vmm);

  // How long Call waits for the answer.
  enum class Wait {
    kRequestTimeout,  // the request timeout given to Create
    kWhileConnected,  // until the VMM answers, exits or closes its control connection
  };
  // Sends `request` and waits for its response: the response if its code is OK, else that
  // code with the VMM's message (ResponseStatus); UNAVAILABLE if the VMM is not connected,
  // went away or did not answer in time.
  // `fd` (borrowed), unless -1, goes with the request (SCM_RIGHTS): a drive swap's new file.
  [[nodiscard]] absl::StatusOr<v1::ControlResponse> Call(SupervisedVmm& vmm,
                                                         v1::ControlRequest request,
                                                         Wait wait = Wait::kRequestTimeout,
                                                         int fd = -1);
  // As Call, waiting at most `timeout` (or the request timeout, if shorter): for a caller with
  // its own deadline (Stop), which a VMM that never answers must not stretch.
  [[nodiscard]] absl::StatusOr<v1::ControlResponse> CallWithin(SupervisedVmm& vmm,
                                                               v1::ControlRequest request,
                                                               std::chrono::milliseconds timeout);
  // Whether the VMM's process has exited, waiting up to `timeout` for it. `lock` holds mu.
  [[nodiscard]] static bool WaitForExit(SupervisedVmm& vmm, std::unique_lock<std::mutex>& lock,
                                        std::chrono::milliseconds timeout);

 private:
  struct Watch {
    std::shared_ptr<SupervisedVmm> vmm;
    bool is_pidfd;
  };

  // Call's body: `timeout` empty waits while the VMM stays connected.
  [[nodiscard]] absl::StatusOr<v1::ControlResponse> CallFor(
      SupervisedVmm& vmm, v1::ControlRequest request,
      std::optional<std::chrono::milliseconds> timeout, int fd);

  explicit Supervisor(std::chrono::milliseconds request_timeout)
      : request_timeout_(request_timeout) {}
  void WatchFd(int fd, const std::shared_ptr<SupervisedVmm>& vmm, bool is_pidfd);
  void UnwatchFd(int fd);
  void Loop();
  void OnControlReadable(SupervisedVmm& vmm);
  // Parses and handles every complete frame read so far; false if the stream is broken.
  // `mu` held.
  bool DrainFrames(SupervisedVmm& vmm);
  void OnProcessExit(SupervisedVmm& vmm);
  // `mu` held.
  void HandleMessage(SupervisedVmm& vmm, const v1::VmmMessage& message);
  // How the process ended: its status (if emberd's child) and what it said last. `mu` held.
  [[nodiscard]] static v1::ExitInfo ExitOf(SupervisedVmm& vmm);

  const std::chrono::milliseconds request_timeout_;
  base::UniqueFd epoll_;
  base::UniqueFd wakeup_;  // eventfd: stops the loop
  std::mutex watch_mu_;
  std::unordered_map<int, Watch> watches_;  // guarded by watch_mu_
  bool stopping_ = false;                   // guarded by watch_mu_
  std::thread thread_;
};

// A pidfd of `pid` (pidfd_open): the process, even once `pid` names another.
[[nodiscard]] absl::StatusOr<base::UniqueFd> OpenPidfd(pid_t pid);

// The status a control-channel response stands for: OK for code 0, else the response's code
// (an absl::StatusCode; an unknown one is INTERNAL) with "VM \"<vm_id>\": <message>".
[[nodiscard]] absl::Status ResponseStatus(const std::string& vm_id,
                                          const v1::ControlResponse& response);

// The status of a VM that ember-vmm could not build, from what it said (`failure`): its
// code, with the message under the field it concerns ("config: " or, for a restore,
// "snapshot: ") when it is the user's input, else naming the VM. A failure with no status
// code is INTERNAL.
[[nodiscard]] absl::Status BuildFailureStatus(const std::string& vm_id, bool restore,
                                              const v1::BuildFailure& failure);

// How a VM that ended while emberd was not running ended, from the "CODE REASON" line
// ember-vmm wrote to its --exit-record file (`record`: its contents, or why there are none):
// exit code -1 when there is no such line (it was killed).
[[nodiscard]] v1::ExitInfo RecordedExit(const absl::StatusOr<std::string>& record);

}  // namespace ember::emberd
