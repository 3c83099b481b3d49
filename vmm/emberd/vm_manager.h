#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/api.pb.h"
#include "ember/v1/vmm_control.pb.h"
#include "vmm/base/unique_fd.h"
#include "vmm/control/frame.h"
#include "vmm/emberd/launcher.h"
#include "vmm/emberd/restore_plan.h"
#include "vmm/emberd/snapshot_catalog.h"
#include "vmm/emberd/vmm_view.h"

namespace ember::emberd {

// Fans VM events out to WatchEvents streams. Any thread.
class EventHub {
 public:
  struct Watcher {
    std::string vm_id;  // empty: every VM
    std::mutex mu;
    std::condition_variable cv;
    std::deque<v1::Event> queue;  // guarded by mu
    bool overflowed = false;      // guarded by mu: the client fell too far behind
  };
  static constexpr std::size_t kMaxQueuedEvents = 10000;

  [[nodiscard]] std::shared_ptr<Watcher> Subscribe(const std::string& vm_id);
  void Unsubscribe(const std::shared_ptr<Watcher>& watcher);
  void Publish(const v1::Event& event);
  [[nodiscard]] std::size_t watchers() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Watcher>> watchers_;  // guarded by mu_
};

struct ManagerOptions {
  std::string state_dir;  // <state_dir>/vms/<id>/ per VM, <state_dir>/snapshots/
  std::size_t max_vms = 1024;  // live (not STOPPED) VMs
  // How long emberd waits for ember-vmm to answer a quick request (start, pause, metrics, ...)
  // and for a new VM's HELLO. A snapshot and a restored VM's HELLO have no such limit: their
  // time grows with guest memory, so emberd waits for as long as the VMM lives and stays
  // connected (a client's own deadline ends only its wait; Stop ends a VMM that never answers).
  std::chrono::milliseconds request_timeout{10000};
  std::chrono::milliseconds create_timeout{30000};
  // Non-empty: ember-vmm runs under ember-jailer (emberd --jailer) as jail_uid:jail_gid, VM
  // <id> chrooted into <jail_dir>/<id>/root, and sees paths in there only. A jailed VM writes
  // its snapshot into its jail's root, and emberd moves the files to where the record says; a
  // restored clone gets the snapshot's files linked (or copied) into its new jail.
  std::string jail_dir;
  uid_t jail_uid = 0;
  gid_t jail_gid = 0;
};

// Owns every VM record and the ember-vmm processes behind them. The gRPC service calls it
// from its threads; one supervisor thread watches every VM's control socket and pidfd.
// Errors are the API's status codes with messages naming the field.
class VmManager {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<VmManager>> Create(
      ManagerOptions options, std::unique_ptr<VmmLauncher> launcher);
  ~VmManager();

  // Loads the records of a previous emberd and re-attaches to the VMs still running.
  [[nodiscard]] absl::Status Recover();

  [[nodiscard]] absl::StatusOr<v1::Vm> CreateVm(std::string vm_id, const v1::VmConfig& config);
  // `request_us`: CLOCK_MONOTONIC µs at which the Start request arrived (boot time base).
  [[nodiscard]] absl::StatusOr<v1::Vm> Start(const std::string& vm_id, std::uint64_t request_us);
  [[nodiscard]] absl::StatusOr<v1::Vm> Pause(const std::string& vm_id);
  [[nodiscard]] absl::StatusOr<v1::Vm> Resume(const std::string& vm_id);
  [[nodiscard]] absl::StatusOr<v1::Vm> Stop(const std::string& vm_id,
                                            std::chrono::milliseconds timeout);
  [[nodiscard]] absl::Status Delete(const std::string& vm_id, bool force);
  [[nodiscard]] absl::StatusOr<v1::Vm> Get(const std::string& vm_id);
  [[nodiscard]] std::vector<v1::Vm> List();
  [[nodiscard]] absl::StatusOr<std::string> VmMetrics(const std::string& vm_id);
  [[nodiscard]] std::string OwnMetrics();
  [[nodiscard]] absl::Status UpdateRateLimits(const v1::UpdateRateLimitsRequest& request);
  [[nodiscard]] absl::StatusOr<v1::Snapshot> CreateSnapshot(
      const v1::CreateSnapshotRequest& request);
  [[nodiscard]] absl::StatusOr<v1::RestoreResponse> Restore(const v1::RestoreRequest& request);
  // The finished snapshots emberd keeps (all, or `vm_id`'s), sorted by snapshot_id.
  [[nodiscard]] std::vector<v1::Snapshot> ListSnapshots(const std::string& vm_id);
  // Removes a snapshot's files and record, unless a live VM, a restore in progress or a DIFF
  // snapshot emberd knows of still needs them (api.proto DeleteSnapshot).
  [[nodiscard]] absl::Status DeleteSnapshot(const std::string& snapshot_id);
  // The console file and whether the VM has stopped (no more output will come).
  [[nodiscard]] absl::StatusOr<std::pair<std::string, bool>> Console(const std::string& vm_id);

  EventHub& events() { return events_; }

 private:
  struct Entry;
  struct Watch {
    std::shared_ptr<Entry> entry;
    bool is_pidfd;
  };

  explicit VmManager(ManagerOptions options, std::unique_ptr<VmmLauncher> launcher)
      : options_(std::move(options)), launcher_(std::move(launcher)) {}
  [[nodiscard]] std::string VmDir(const std::string& vm_id) const;
  [[nodiscard]] absl::StatusOr<std::shared_ptr<Entry>> Find(const std::string& vm_id);
  // Spawns the VM's ember-vmm and waits for its HELLO: CREATED, or PAUSED for a restore.
  [[nodiscard]] absl::StatusOr<v1::Vm> SpawnVm(std::string vm_id, const v1::VmConfig& config,
                                               const RestorePlan* restore);
  // How long Call waits for the answer.
  enum class Wait {
    kRequestTimeout,  // ManagerOptions::request_timeout
    kWhileConnected,  // until the VMM answers, exits or closes its control connection
  };
  [[nodiscard]] absl::StatusOr<v1::ControlResponse> Call(Entry& entry,
                                                         v1::ControlRequest request,
                                                         Wait wait = Wait::kRequestTimeout);
  // Whether the VM's ember-vmm has exited (its VM is STOPPED), waiting up to `timeout` for it.
  [[nodiscard]] bool WaitForExit(Entry& entry, std::chrono::milliseconds timeout);
  [[nodiscard]] absl::StatusOr<v1::Vm> SimpleOp(const std::string& vm_id, v1::Vm::State from,
                                                const char* verb,
                                                const v1::ControlRequest& request);
  // Registers the VM's control connection and `pid` with the supervisor.
  // `control`: an already connected socket, or invalid to connect now.
  [[nodiscard]] absl::Status Attach(const std::shared_ptr<Entry>& entry, pid_t pid, bool child,
                                    base::UniqueFd control = {});
  void WatchFd(int fd, const std::shared_ptr<Entry>& entry, bool is_pidfd);
  void UnwatchFd(int fd);
  void SuperviseLoop();
  void OnControlReadable(const std::shared_ptr<Entry>& entry);
  void OnProcessExit(const std::shared_ptr<Entry>& entry);
  // Entry::mu held.
  void HandleVmmMessage(Entry& entry, const v1::VmmMessage& message);
  void ApplyVmmState(Entry& entry, v1::VmmStatus::State state);
  void SetState(Entry& entry, v1::Vm::State state);
  void Persist(Entry& entry);
  void Publish(Entry& entry, v1::Event event);
  [[nodiscard]] std::size_t LiveVms();

  ManagerOptions options_;
  std::unique_ptr<VmmLauncher> launcher_;
  EventHub events_;

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> vms_;  // guarded by mu_
  std::unique_ptr<SnapshotCatalog> catalog_;
  std::unique_ptr<VmmView> view_;

  base::UniqueFd epoll_;
  base::UniqueFd wakeup_;  // eventfd: stops the supervisor
  std::mutex watch_mu_;
  std::unordered_map<int, Watch> watches_;  // guarded by watch_mu_
  std::thread supervisor_;
  bool stopping_ = false;  // guarded by watch_mu_
};

}  // namespace ember::emberd
