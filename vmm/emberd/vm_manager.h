#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/api.pb.h"
#include "vmm/emberd/event_hub.h"
#include "vmm/emberd/launcher.h"
#include "vmm/emberd/restore_plan.h"
#include "vmm/emberd/snapshot_catalog.h"
#include "vmm/emberd/snapshot_mac.h"
#include "vmm/emberd/supervisor.h"
#include "vmm/emberd/vm_entry.h"
#include "vmm/emberd/vmm_view.h"

namespace ember::emberd {

struct ManagerOptions {
  std::string state_dir;  // <state_dir>/vms/<id>/ per VM, <state_dir>/snapshots/
  std::size_t max_vms = 1024;  // live (not STOPPED) VMs
  // How long emberd waits for ember-vmm to answer a quick request (start, pause, metrics, ...)
  // and for a new VM's HELLO. A snapshot and a restored VM's HELLO have no such limit: their
  // time grows with guest memory, so emberd waits for as long as the VMM lives and stays
  // connected (a client's own deadline ends only its wait; Stop ends a VMM that never answers).
  std::chrono::milliseconds request_timeout{10000};
  std::chrono::milliseconds create_timeout{30000};
  // Non-empty: ember-vmm runs under ember-jailer, each VM as its own uid and gid of jail_ids,
  // VM <id> chrooted into <jail_dir>/<id>/root, and sees paths in there only. A jailed VM writes
  // its snapshot into its jail's root, and emberd moves the files to where the record says; a
  // restored clone gets the snapshot's files linked (or copied) into its new jail.
  std::string jail_dir;
  JailIds jail_ids;
  JailCgroups jail_cgroups;
  // emberd's allowed directories (--allow-dir), outliving the manager: the rule a restored
  // state file's drive and vsock paths must pass when no override replaces them.
  const base::PathRules* paths = nullptr;
};

// Owns every VM record and orchestrates the ember-vmm processes behind them: the supervisor
// (supervisor.h) watches and talks to the processes, the snapshot catalog keeps the
// snapshots, the VMM view (vmm_view.h) says how a VMM sees the host's files. The gRPC service
// calls it from its threads. Errors are the API's status codes with messages naming the field.
class VmManager {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<VmManager>> Create(
      ManagerOptions options, std::unique_ptr<VmmLauncher> launcher);
  ~VmManager();

  // Loads the records of a previous emberd and re-attaches to the VMs still running.
  [[nodiscard]] absl::Status Recover();

  // `netns_path` (emberd's own callers only, as Restore's): the VMM runs in that clone
  // network (a function's deploy VM, whose tap its clones' networks copy).
  [[nodiscard]] absl::StatusOr<v1::Vm> CreateVm(std::string vm_id, const v1::VmConfig& config,
                                                const std::string& netns_path = "");
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
  // The API's UpdateDrive (api.proto): the new file opened by the rules a Create's drive
  // passes, handed to the VMM as an fd, then recorded. Returns the VM's record.
  [[nodiscard]] absl::StatusOr<v1::Vm> UpdateDrive(const v1::UpdateDriveRequest& request);
  [[nodiscard]] absl::StatusOr<v1::Snapshot> CreateSnapshot(
      const v1::CreateSnapshotRequest& request);
  // `netns_paths` (emberd's own callers only): clone i's VMM runs in the clone network at
  // netns_paths[i] (LaunchSpec::netns_path); clones past its end in emberd's namespace or their
  // jail's own.
  [[nodiscard]] absl::StatusOr<v1::RestoreResponse> Restore(
      const v1::RestoreRequest& request, const std::vector<std::string>& netns_paths = {});
  // The finished snapshots emberd keeps (all, or `vm_id`'s), sorted by snapshot_id.
  [[nodiscard]] std::vector<v1::Snapshot> ListSnapshots(const std::string& vm_id);
  // Removes a snapshot's files and record, unless a live VM, a restore in progress or a DIFF
  // snapshot emberd knows of still needs them (api.proto DeleteSnapshot).
  [[nodiscard]] absl::Status DeleteSnapshot(const std::string& snapshot_id);
  // The operator vouches for a snapshot without a MAC: seals its files as they are now
  // (SnapshotMac::Seal; api.proto TrustSnapshot).
  [[nodiscard]] absl::StatusOr<v1::Snapshot> TrustSnapshot(const std::string& snapshot_id);
  // Whether the VM has stopped (no more console output will come).
  [[nodiscard]] absl::StatusOr<bool> ConsoleEnded(const std::string& vm_id);
  // The VM's console file, opened safely (VmmView::OpenVmmFile): NOT_FOUND until it exists.
  [[nodiscard]] absl::StatusOr<base::UniqueFd> OpenConsole(const std::string& vm_id);

  EventHub& events() { return events_; }

 private:
  using Entry = VmEntry;
  // A new VM's files and the two ends of its control socket (SpawnVm).
  struct VmFiles;

  explicit VmManager(ManagerOptions options, std::unique_ptr<VmmLauncher> launcher)
      : options_(std::move(options)), launcher_(std::move(launcher)) {}
  [[nodiscard]] std::string VmDir(const std::string& vm_id) const;
  [[nodiscard]] absl::StatusOr<std::shared_ptr<Entry>> Find(const std::string& vm_id);
  // Spawns the VM's ember-vmm and waits for its HELLO: CREATED, or PAUSED for a restore.
  [[nodiscard]] absl::StatusOr<v1::Vm> SpawnVm(std::string vm_id, const v1::VmConfig& config,
                                               const RestorePlan* restore,
                                               const std::string& netns_path = "");
  // Records a new VM (CREATED, `creating`) under `vm_id`, or a generated id if empty.
  [[nodiscard]] absl::StatusOr<std::shared_ptr<Entry>> AddEntry(std::string vm_id,
                                                                const v1::VmConfig& config,
                                                                const RestorePlan* restore);
  // Forgets a VM whose creation failed: kills its VMM and removes its files (RemoveFiles: if any
  // stays, its id stays taken until a Delete removes them). Returns `status`, and says so if
  // files stayed. entry->op_mu held.
  absl::Status Abandon(const std::shared_ptr<Entry>& entry, absl::Status status);
  // Drops `entry` from vms_ (if it is still the one under its id).
  void Forget(const std::shared_ptr<Entry>& entry);
  // The entry of `vm_id` whose Delete could not remove all its files, or null.
  std::shared_ptr<Entry> UnfinishedDelete(const std::string& vm_id);
  // Removes a deleted VM's record and files, then tells watchers (DELETED) and forgets it; if
  // any stays, keeps it for a retried Delete. entry->op_mu held.
  [[nodiscard]] absl::Status RemoveFiles(const std::shared_ptr<Entry>& entry);
  // A VM directory without a record (vm_manager_recovery.cc).
  struct Leftover;
  // Recover's first step for a VM directory without a record: takes its id (a deleted entry)
  // and connects to its VMM, if one still holds the control socket.
  [[nodiscard]] Leftover ReserveLeftover(const std::string& vm_id);
  // Then, on leftover_remover_: stops the VMM (SIGKILL if it does not answer the stop within
  // the request timeout), removes the files and frees the id (RemoveFiles).
  void RemoveLeftover(Leftover& leftover);
  // Writes the VM's directory and starts its ember-vmm under supervision.
  [[nodiscard]] absl::Status Launch(const std::shared_ptr<Entry>& entry,
                                    const v1::VmConfig& config, const RestorePlan* restore,
                                    const std::string& netns_path);
  // Waits until the VMM has built the VM (its HELLO) or says why it could not.
  [[nodiscard]] absl::Status AwaitBuilt(Entry& entry, bool restore);
  [[nodiscard]] absl::StatusOr<v1::Vm> SimpleOp(const std::string& vm_id, v1::Vm::State from,
                                                const char* verb,
                                                const v1::ControlRequest& request);
  // CreateSnapshot's checks of the VM; returns its config.
  [[nodiscard]] absl::StatusOr<v1::VmConfig> CheckSnapshotable(
      Entry& entry, const v1::CreateSnapshotRequest& request, v1::Snapshot* snapshot);
  // Has the VMM of a VM with `config` write `snapshot` (into the directory of its files) and
  // puts the files where its record says; on failure, cleans up after it unless the VMM may
  // still be writing (then its pending record stays for the next start to settle).
  [[nodiscard]] absl::Status WriteSnapshot(Entry& entry, const v1::Snapshot& snapshot,
                                           const v1::VmConfig& config, v1::Snapshot* written);
  [[nodiscard]] absl::StatusOr<std::vector<v1::Vm>> SpawnClones(
      const v1::RestoreRequest& request, const std::vector<std::string>& netns_paths,
      RestorePlan& plan);
  // Recover's steps: the VMs' records (and the ids of directories without one), then each live
  // VMM's connection.
  [[nodiscard]] absl::StatusOr<std::vector<std::shared_ptr<Entry>>> LoadVms(
      std::vector<std::string>* leftovers);
  void Reattach(const std::shared_ptr<Entry>& entry);
  // Ends a VMM that holds its control socket but does not answer, so that no ember-vmm runs
  // that emberd does not know: SIGKILL through `pidfd` (of its recorded pid or its socket
  // peer's, opened when it connected), then up to 5 s for its exit. `lock` holds entry->mu;
  // released meanwhile.
  void KillUnanswering(const std::shared_ptr<Entry>& entry, base::UniqueFd pidfd,
                       std::unique_lock<std::mutex>& lock);
  [[nodiscard]] std::size_t LiveVms();

  ManagerOptions options_;
  std::unique_ptr<VmmLauncher> launcher_;
  EventHub events_;
  std::unique_ptr<SnapshotCatalog> catalog_;
  std::optional<SnapshotMac> mac_;  // set by Create; authenticates the snapshots emberd makes
  std::unique_ptr<VmmView> view_;

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> vms_;  // guarded by mu_
  // Recover's removal of leftovers (RemoveLeftover); joined first on destruction, which it may
  // hold up for the request timeout and 5 s at most.
  std::thread leftover_remover_;
  // Last: its thread calls into the entries, and so into the members above.
  std::unique_ptr<Supervisor> supervisor_;
};

}  // namespace ember::emberd
