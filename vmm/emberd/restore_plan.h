#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ember/v1/api.pb.h"
#include "vmm/base/path_rules.h"
#include "vmm/base/unique_fd.h"
#include "vmm/emberd/launch_files.h"
#include "vmm/emberd/launcher.h"
#include "vmm/emberd/snapshot_catalog.h"

namespace ember::emberd {

// A jailed VM's memory files that its ember-vmm names as the bases of its next diff snapshot,
// oldest first: (the file's name in the jail's root, the file on the host).
using JailChain = std::vector<std::pair<std::string, std::string>>;

// How a clone's ember-vmm builds its VM from a snapshot (VmManager::Restore).
struct RestorePlan {
  std::string state_path;
  std::string memory_path;
  std::string restored_from;  // the snapshot_id, or the state path
  // The emberd snapshot restored (by id, or by its state path), empty if none: the base of
  // the clone's first DIFF snapshot.
  std::string snapshot_id;
  bool uffd = false;      // RestoreRequest.memory_backend UFFD
  bool prefetch = false;  // RestoreRequest.prefetch_working_set
  bool diff = false;      // the snapshot is a DIFF snapshot
  std::string record_dir; // emberd's record of it; empty when emberd has none
  v1::RestoreOverrides overrides;
  // The clone network the clone's VMM runs in (LaunchSpec::netns_path); set by emberd's own
  // callers (the Functions pool), never from a request.
  std::string netns_path;
  // Jailed only: the memory file's name in the clone's jail, and the diff bases to link in
  // beside it under the names its state file gives them (JailedView).
  std::string jail_memory_name;
  JailChain jail_bases;
  // The state and memory files as emberd opened them once (OpenRestoreFiles): their MAC is
  // verified on these fds, and every clone's VMM gets these very files (HandOverFile),
  // whatever the names lead to by then. Shared by the plan's copies.
  std::shared_ptr<const base::UniqueFd> state_file;
  std::shared_ptr<const base::UniqueFd> memory_file;
  // A DIFF snapshot of emberd's catalog: the memory files its state file names as its bases,
  // oldest first (each base snapshot's memory_path, the name its VMM wrote it under), and
  // those files as OpenRestoreFiles opened them: an unjailed clone is handed these
  // (ember-vmm --base-memory-file), never the names.
  std::vector<std::string> base_memory_paths;
  std::vector<std::shared_ptr<const base::UniqueFd>> base_files;
  // A UFFD restore's working set (<memory>.ws): with prefetch, the file as opened
  // (working_set_file); without, the directory the VMM records it in (working_set_dir, an
  // O_PATH fd of the memory file's directory, resolved once) and its name there.
  std::shared_ptr<const base::UniqueFd> working_set_file;
  std::shared_ptr<const base::UniqueFd> working_set_dir;
  std::string working_set_name;
  // How the VMM is to find those, when not by state_path and memory_path themselves (set by
  // an unjailed launch, DirectView): the memory file's name (ember-vmm --restore-mem-name),
  // the file handed over for each base name (--base-memory-file), the working set
  // (--working-set).
  std::string vmm_memory_name;
  std::vector<std::pair<std::string, std::string>> vmm_base_files;
  std::string vmm_working_set;
};

// Opens the plan's state and memory files once (and its diff bases, and its working set or
// the directory it is to be recorded in), for reading, without blocking (a FIFO is
// refused at once), and only regular files: a request's own paths (`by_path`) through `paths`
// (emberd's allowed directories, when not null: symlinks only beneath them), a snapshot of
// emberd's catalog with no symlink at all in the last component. `field` names the snapshot
// in errors: NOT_FOUND for a file that cannot be opened, INVALID_ARGUMENT for one that is no
// regular file.
[[nodiscard]] absl::Status OpenRestoreFiles(const std::string& field, bool by_path,
                                            const base::PathRules* paths, RestorePlan* plan);

// Adds a dup of `file` to the files `spec`'s VMM is handed (LaunchSpec::files); returns its
// index there. INVALID_ARGUMENT when a launch would hand over more than kMaxLaunchFiles.
[[nodiscard]] absl::StatusOr<int> HandOverFile(const base::UniqueFd& file, LaunchSpec* spec);

// The memory file a restore by state_path reads: memory_path, or when it is empty the file
// "memory" beside the state file (what PlanRestore uses, and what emberd's path rules check).
// A request by snapshot_id: its memory_path as given.
[[nodiscard]] std::string RequestedMemoryPath(const v1::RestoreRequest& request);

// A restore's plan from its request: the snapshot's files (of `catalog`'s snapshot, or the
// paths the request names) and where its record is.
[[nodiscard]] absl::StatusOr<RestorePlan> PlanRestore(const v1::RestoreRequest& request,
                                                      const SnapshotCatalog& catalog);
// Whether the plan's files are there and fit its memory backend; errors name the field.
[[nodiscard]] absl::Status CheckRestoreFiles(const v1::RestoreRequest& request,
                                             const RestorePlan& plan);

// A clone's drive file, and the rule emberd opens it by (launch_files.h).
struct RestoredDrive {
  std::string path;
  ImageDirs images = ImageDirs::kRefused;
};
// The drives of a clone whose snapshotted VM had `config` (emberd's record, with `overrides`
// applied; empty when emberd has none) by drive id, sorted: an override's file is the
// client's (never in emberd's read-only image directories); a recorded drive's is emberd's
// own, read-only where the record says so (a function's root image).
[[nodiscard]] std::map<std::string, RestoredDrive> RestoredDrives(
    const v1::VmConfig& config, const v1::RestoreOverrides& overrides);

// ember-vmm's restore flags for `plan`. Its overrides travel as one message (ember-vmm
// --restore-overrides), written here to `overrides_file`, which the VMM opens as
// `overrides_for_vmm` (the same path, or where its jail shows the file).
[[nodiscard]] absl::StatusOr<std::vector<std::string>> RestoreArgs(
    const RestorePlan& plan, const std::string& overrides_file,
    const std::string& overrides_for_vmm);

// Applies a clone's overrides to the recorded configuration of its snapshot by the rules
// (rules::ApplyRestoreOverrides, which ember-vmm applies too: the snapshot's log and metrics
// paths are dropped), after emberd's own: drive paths are absolute. With `check` (the
// configuration is known), an override naming a drive or interface the snapshot does not
// have is INVALID_ARGUMENT; otherwise ember-vmm finds that out. `where` names the overrides in
// messages ("overrides[0]").
[[nodiscard]] absl::Status ApplyOverrides(const v1::RestoreOverrides& overrides,
                                          const std::string& where, bool check,
                                          v1::VmConfig* config);

}  // namespace ember::emberd
