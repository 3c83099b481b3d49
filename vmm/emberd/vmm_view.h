#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "ember/v1/api.pb.h"
#include "vmm/base/path_rules.h"
#include "vmm/emberd/event_hub.h"
#include "vmm/emberd/launcher.h"
#include "vmm/emberd/restore_plan.h"
#include "vmm/emberd/vmm_file.h"

namespace ember::emberd {

// How an ember-vmm sees the host's files: everything emberd names to a VMM (its config, kernel,
// drives, a snapshot to restore, where to write a snapshot, its console and exit record) goes
// through here, so that the manager is the same whether VMMs run in the host's mount namespace
// (DirectView) or each in its own jail (JailedView: files staged into the chroot, snapshots
// moved out). Called by VmManager from any thread; an implementation guards what it keeps.
class VmmView {
 public:
  // A snapshot's two files as the VMM sees them (the paths it is told to write).
  struct SnapshotFiles {
    std::string state;
    std::string memory;
    // emberd copies them into files of its own (FinishSnapshot), which it syncs: the VMM's
    // need no fsync.
    bool scratch = false;
  };

  virtual ~VmmView() = default;

  // Whether `vm_id` can name a VM of this view (ember-jailer's ids have no underscore).
  [[nodiscard]] virtual absl::Status CheckVmId(const std::string& vm_id) const = 0;
  // Fills in `spec`'s ember-vmm arguments (and, jailed, the files to put into the jail) for a
  // VM built from `config` (its config.pb is in spec->vm_dir) or, with `restore`, restored
  // from a snapshot; `config` then has the clone's overrides applied.
  [[nodiscard]] virtual absl::Status PrepareLaunch(const v1::VmConfig& config,
                                                   const RestorePlan* restore,
                                                   LaunchSpec* spec) = 0;
  // The host path of the VM's exit record (ember-vmm --exit-record).
  [[nodiscard]] virtual std::string ExitRecordPath(const std::string& vm_id) const = 0;
  // Opens `name` ("console.log", "exit"), a file the VM's ember-vmm writes, as OpenVmmFile
  // does: never through a symlink, never from outside where that VMM writes.
  [[nodiscard]] virtual absl::StatusOr<base::UniqueFd> OpenVmmFile(
      const std::string& vm_id, const std::string& name) const = 0;
  // Reads what the view keeps of a VM that a previous emberd ran (Recover).
  virtual void LoadVm(const std::string& vm_id) = 0;
  // Removes what the view made for a VM that is deleted or failed to start.
  [[nodiscard]] virtual absl::Status RemoveVm(const std::string& vm_id) = 0;

  // A restore's checks of the snapshot's files, beyond that they are readable; may fill in
  // `plan`'s view-specific fields. `field` names the snapshot in messages.
  [[nodiscard]] virtual absl::Status PlanRestore(const std::string& field,
                                                 RestorePlan* plan) const = 0;
  // Whether a clone's overrides (`where`: "overrides[i]") can be honoured.
  [[nodiscard]] virtual absl::Status CheckOverrides(
      const std::string& where, const v1::RestoreOverrides& overrides) const = 0;

  // Whether the VM's ember-vmm may be handed `file` (borrowed: a drive's new backing file,
  // open read-only or read-write as `read_only` says) by a drive swap: only if Create would
  // have let it open that file itself. OK by default (an unjailed VMM runs as emberd does);
  // a jailed one needs its uid or gid to have the access in the file's mode bits.
  [[nodiscard]] virtual absl::Status CheckDriveFile(const std::string& /*vm_id*/, int /*file*/,
                                                    bool /*read_only*/) const {
    return absl::OkStatus();
  }
  // Whether the VM can take a snapshot of this kind now.
  [[nodiscard]] virtual absl::Status CheckSnapshot(const std::string& vm_id,
                                                   bool diff) const = 0;
  // Where the VM's ember-vmm writes `snapshot` (whose state_path and memory_path say where
  // the files end up).
  [[nodiscard]] virtual SnapshotFiles SnapshotTarget(const v1::Snapshot& snapshot) const = 0;
  // The directory the VM's ember-vmm is to write `snapshot` in, opened now for reading (the fd
  // goes with the request: the VMM makes the files in that very directory, whatever its name
  // leads to by then, and syncs it through the fd), or an empty fd when the VMM writes where
  // SnapshotTarget names.
  // `clients`: the directory is a request's snapshot_dir (opened by the client's rule), not
  // emberd's own record directory. INVALID_ARGUMENT naming snapshot_dir when it no longer
  // passes the rule.
  [[nodiscard]] virtual absl::StatusOr<base::UniqueFd> OpenSnapshotDir(
      const v1::Snapshot& /*snapshot*/, bool /*clients*/) const {
    return base::UniqueFd();
  }
  // After ember-vmm wrote `snapshot`: puts its files where the record says and records in
  // `record_dir` what a restore of it needs.
  [[nodiscard]] virtual absl::Status FinishSnapshot(const v1::Snapshot& snapshot,
                                                    const std::string& record_dir) = 0;
  // After a failed snapshot whose VMM has ended: removes what it wrote where FinishSnapshot
  // would have found it.
  virtual void AbandonSnapshot(const v1::Snapshot& snapshot) = 0;
};

// VMMs run in the host's mount namespace: every path is the host's. `vms_dir`: the VMs'
// state directories (<vms_dir>/<vm_id>). `paths`: emberd's allowed directories (outliving the
// view): the VMM gets the kernel, initrd and drives as the files emberd checked against them
// (launch_files.h), and a restoring one gets them as its --allow-dir for the drive and vsock
// paths of a state file that no override replaces. Null: paths as they are, and no
// --allow-dir (tests of other things).
[[nodiscard]] std::unique_ptr<VmmView> MakeDirectView(std::string vms_dir,
                                                      const base::PathRules* paths = nullptr);

// VMMs run under ember-jailer, each as a uid and gid of its own from `ids` and in a cgroup of
// its own (`cgroups`), VM <id> chrooted into <jail_dir>/<id>/root. `paths` (outliving the
// view): the kernel, initrd and drives are linked into a jail from the files emberd checked
// against these rules; null: from their names (tests of other things). With `events`
// (outliving the view), a VM's cgroup goes as soon as it is STOPPED, not only when deleted.
[[nodiscard]] std::unique_ptr<VmmView> MakeJailedView(std::string vms_dir, std::string jail_dir,
                                                      JailIds ids,
                                                      const base::PathRules* paths = nullptr,
                                                      JailCgroups cgroups = {},
                                                      EventHub* events = nullptr);

// ember-jailer's options for an idle VMM pool slot's jail, beside its identity: KVM its one
// device node, the cgroup limits of a VM of the default configuration under `cgroups`, no file
// size bound. A VM that claims the slot gets its own (ForkServerLauncher::ClaimSlot; the bound
// the slot sets itself at its launch).
[[nodiscard]] std::vector<std::string> IdleSlotJailerOptions(const JailCgroups& cgroups);

}  // namespace ember::emberd
