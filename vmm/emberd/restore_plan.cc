#include "vmm/emberd/restore_plan.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "vmm/base/status.h"
#include "vmm/emberd/store.h"
#include "vmm/emberd/working_set_size.h"
#include "vmm/rules/restore_overrides.h"

namespace ember::emberd {

absl::StatusOr<std::vector<std::string>> RestoreArgs(const RestorePlan& plan,
                                                     const std::string& overrides_file,
                                                     const std::string& overrides_for_vmm) {
  EMBER_RETURN_IF_ERROR(WriteFileAtomic(overrides_file, plan.overrides.SerializeAsString()));
  std::vector<std::string> args = {"--restore-from",      plan.state_path,
                                   "--restore-mem",       plan.memory_path,
                                   "--restore-overrides", overrides_for_vmm};
  if (!plan.vmm_memory_name.empty()) {
    args.insert(args.end(), {"--restore-mem-name", plan.vmm_memory_name});
  }
  for (const auto& [name, file] : plan.vmm_base_files) {
    args.insert(args.end(), {"--base-memory-file", name + "=" + file});
  }
  if (plan.uffd) {
    // The working set is <memory>.ws, beside the memory file (ember-vmm's default), unless
    // the VMM is told where it is.
    args.insert(args.end(), {"--restore-mem-backend", "uffd"});
    if (plan.prefetch) args.push_back("--prefetch-working-set");
    if (!plan.vmm_working_set.empty()) args.insert(args.end(), {"--working-set", plan.vmm_working_set});
  }
  return args;
}

std::map<std::string, RestoredDrive> RestoredDrives(const v1::VmConfig& config,
                                                    const v1::RestoreOverrides& overrides) {
  std::map<std::string, RestoredDrive> drives;
  for (const v1::Drive& drive : config.drives()) {
    if (!drive.path_on_host().empty()) {
      drives[drive.drive_id()] = {drive.path_on_host(), DriveImageDirs(drive)};
    }
  }
  for (const auto& [id, path] : overrides.drive_path_on_host()) {
    drives[id] = {path, ImageDirs::kRefused};
  }
  return drives;
}

absl::Status ApplyOverrides(const v1::RestoreOverrides& overrides, const std::string& where,
                            bool check, v1::VmConfig* config) {
  for (const auto& [id, path] : overrides.drive_path_on_host()) {
    if (path.empty() || path[0] != '/') {
      return absl::InvalidArgumentError(where + ".drive_path_on_host[" + id +
                                        "]: must be an absolute path");
    }
  }
  return rules::ApplyRestoreOverrides(
      overrides, where, check ? rules::UnknownDevices::kRefuse : rules::UnknownDevices::kIgnore,
      config);
}

std::string RequestedMemoryPath(const v1::RestoreRequest& request) {
  if (request.state_path().empty() || !request.memory_path().empty()) return request.memory_path();
  return std::filesystem::path(request.state_path()).parent_path().string() + "/memory";
}

namespace {

// A DIFF snapshot of the catalog: the memory files its state file names as its bases, oldest
// first. Its VMM named them as it was told to write or restore each (emberd's snapshots'
// memory_paths), so the catalog's chain gives the same names.
absl::Status PlanBases(const SnapshotCatalog& catalog, RestorePlan* plan) {
  if (plan->snapshot_id.empty()) return absl::OkStatus();
  EMBER_ASSIGN_OR_RETURN(v1::Snapshot snapshot, catalog.Get(plan->snapshot_id));
  plan->diff = snapshot.type() == v1::CreateSnapshotRequest::DIFF;
  for (std::string base = snapshot.base_snapshot_id(); plan->diff && !base.empty();) {
    if (plan->base_memory_paths.size() == kMaxLaunchFiles) {
      return absl::FailedPreconditionError("snapshot \"" + plan->snapshot_id +
                                           "\" has a chain of more than " +
                                           std::to_string(kMaxLaunchFiles) + " snapshots");
    }
    EMBER_ASSIGN_OR_RETURN(v1::Snapshot recorded, catalog.Get(base));
    plan->base_memory_paths.insert(plan->base_memory_paths.begin(), recorded.memory_path());
    if (recorded.type() != v1::CreateSnapshotRequest::DIFF) break;
    base = recorded.base_snapshot_id();
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RestorePlan> PlanRestore(const v1::RestoreRequest& request,
                                        const SnapshotCatalog& catalog) {
  // Where the snapshot is, and the configuration of the VM it was taken from (emberd's
  // record; a state_path emberd did not write may have none).
  RestorePlan plan;
  if (!request.snapshot_id().empty()) {
    EMBER_ASSIGN_OR_RETURN(v1::Snapshot snapshot, catalog.Get(request.snapshot_id()));
    plan.state_path = snapshot.state_path();
    plan.memory_path = snapshot.memory_path();
    plan.restored_from = request.snapshot_id();
    plan.snapshot_id = request.snapshot_id();
    plan.record_dir = catalog.RecordDir(request.snapshot_id());
  } else {
    plan.state_path = request.state_path();
    plan.memory_path = RequestedMemoryPath(request);
    plan.restored_from = request.state_path();
    // One of emberd's own snapshots, restored by its path: the clones' DIFF snapshots
    // apply onto it all the same.
    plan.snapshot_id = catalog.FindByFiles(plan.state_path, plan.memory_path);
    // Only emberd's own record: what a file in the caller's directory says would decide
    // which host files a clone is given (its drives, a jail's links).
    if (!plan.snapshot_id.empty()) plan.record_dir = catalog.RecordDir(plan.snapshot_id);
  }
  EMBER_RETURN_IF_ERROR(PlanBases(catalog, &plan));
  plan.uffd = request.memory_backend() == v1::RestoreRequest::UFFD;
  plan.prefetch = request.prefetch_working_set();
  return plan;
}

absl::Status CheckRestoreFiles(const v1::RestoreRequest& request, const RestorePlan& plan) {
  if (plan.uffd && plan.diff) {
    return absl::FailedPreconditionError(
        "memory_backend: UFFD restores FULL snapshots only, and snapshot \"" +
        request.snapshot_id() + "\" is a DIFF; use FILE, or fold it into a full snapshot "
        "(ember-snapshot merge)");
  }
  if (plan.prefetch && ::access((plan.memory_path + ".ws").c_str(), R_OK) != 0) {
    return absl::FailedPreconditionError(
        "prefetch_working_set: no working set recorded for " + plan.memory_path + " (" +
        plan.memory_path + ".ws: " + std::strerror(errno) +
        "); a UFFD restore without prefetch_working_set records one when its VM ends");
  }
  const std::string field = request.snapshot_id().empty() ? "state_path" : "snapshot_id";
  for (const std::string& path : {plan.state_path, plan.memory_path}) {
    if (::access(path.c_str(), R_OK) != 0) {
      return absl::NotFoundError(field + ": cannot read " + path + ": " + std::strerror(errno));
    }
  }
  return absl::OkStatus();
}

}  // namespace ember::emberd

namespace ember::emberd {
namespace {

constexpr int kRestoreFileFlags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;

// `fd`, opened for `path`, if it is a regular file.
absl::StatusOr<std::shared_ptr<const base::UniqueFd>> RegularFile(const std::string& field,
                                                                  const std::string& path,
                                                                  base::UniqueFd fd) {
  if (!fd) {
    return absl::NotFoundError(field + ": cannot open " + path + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd.Get(), &st) != 0) return base::ErrnoError("fstat", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(field + ": " + path + " is not a regular file");
  }
  return std::make_shared<const base::UniqueFd>(std::move(fd));
}

absl::StatusOr<std::shared_ptr<const base::UniqueFd>> OpenRestoreFile(
    const std::string& field, const std::string& path, bool by_path, const base::PathRules* paths) {
  constexpr int kFlags = kRestoreFileFlags;
  base::UniqueFd fd;
  if (by_path && paths != nullptr) {
    // The file that passed the rule (an O_PATH fd), opened for reading through its fd: not
    // whatever the name leads to by now.
    EMBER_ASSIGN_OR_RETURN(base::UniqueFd checked, paths->OpenFile(field, path));
    fd.Reset(::open(("/proc/self/fd/" + std::to_string(checked.Get())).c_str(), kFlags));
  } else {
    fd.Reset(::open(path.c_str(), kFlags | (by_path ? 0 : O_NOFOLLOW)));
  }
  return RegularFile(field, path, std::move(fd));
}

// The directory of a snapshot of emberd's catalog, opened once (an O_PATH fd): its state,
// memory and working set are all opened from it, never through their names' directories
// again, which a symlink swapped in between would lead elsewhere. emberd's own record
// directory with no symlink in its last component; a client's snapshot_dir by the client's
// rule, as when it was written (no symlink out of the allowed directories).
absl::StatusOr<base::UniqueFd> OpenCatalogDir(const std::string& field, const RestorePlan& plan,
                                              const base::PathRules* paths) {
  const std::string dir = std::filesystem::path(plan.state_path).parent_path().string();
  if (paths != nullptr && dir != plan.record_dir) {
    EMBER_ASSIGN_OR_RETURN(base::PathRules::Place place, paths->OpenPlace(field, plan.state_path));
    return std::move(place.dir);
  }
  base::UniqueFd fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    return absl::NotFoundError(field + ": cannot open " + dir + ": " + std::strerror(errno));
  }
  return fd;
}

// `path` (in the catalog snapshot's directory `dir`), by its last component: no symlink.
absl::StatusOr<std::shared_ptr<const base::UniqueFd>> OpenCatalogFile(const std::string& field,
                                                                      const base::UniqueFd& dir,
                                                                      const std::string& path) {
  const std::string name = std::filesystem::path(path).filename().string();
  return RegularFile(field, path,
                     base::UniqueFd(::openat(dir.Get(), name.c_str(),
                                             kRestoreFileFlags | O_NOFOLLOW)));
}

}  // namespace

absl::Status OpenRestoreFiles(const std::string& field, bool by_path,
                              const base::PathRules* paths, RestorePlan* plan) {
  // A catalog snapshot's files all lie in one directory (CreateSnapshot names them so).
  base::UniqueFd catalog_dir;
  if (!by_path) {
    const std::filesystem::path state(plan->state_path);
    if (std::filesystem::path(plan->memory_path).parent_path() != state.parent_path()) {
      return absl::InternalError(field + ": the snapshot's state and memory files are in "
                                 "different directories");
    }
    EMBER_ASSIGN_OR_RETURN(catalog_dir, OpenCatalogDir(field, *plan, paths));
  }
  auto open_file = [&](const std::string& what, const std::string& path) {
    return by_path ? OpenRestoreFile(what, path, by_path, paths)
                   : OpenCatalogFile(what, catalog_dir, path);
  };
  EMBER_ASSIGN_OR_RETURN(plan->state_file, open_file(field, plan->state_path));
  EMBER_ASSIGN_OR_RETURN(plan->memory_file, open_file(field, plan->memory_path));
  plan->base_files.clear();
  // The catalog's own paths, whichever way the snapshot was named.
  for (const std::string& base : plan->base_memory_paths) {
    EMBER_ASSIGN_OR_RETURN(plan->base_files.emplace_back(),
                           OpenRestoreFile(field, base, /*by_path=*/false, paths));
  }
  if (plan->uffd && plan->prefetch) {
    EMBER_ASSIGN_OR_RETURN(plan->working_set_file,
                           open_file("prefetch_working_set", plan->memory_path + ".ws"));
    // Bounded before a jailed clone's fork server copies it: no set of this memory is larger.
    struct stat set {}, memory {};
    if (::fstat((*plan->working_set_file).Get(), &set) != 0 ||
        ::fstat((*plan->memory_file).Get(), &memory) != 0) {
      return base::ErrnoError("fstat", plan->memory_path + ".ws");
    }
    if (static_cast<std::uint64_t>(set.st_size) >
        MaxWorkingSetBytes(static_cast<std::uint64_t>(memory.st_size))) {
      return absl::InvalidArgumentError("prefetch_working_set: " + plan->memory_path +
                                        ".ws is larger than any working set of its memory");
    }
  } else if (plan->uffd && by_path && paths != nullptr) {
    EMBER_ASSIGN_OR_RETURN(base::PathRules::Place place,
                           paths->OpenPlace(field, plan->memory_path + ".ws"));
    plan->working_set_dir = std::make_shared<const base::UniqueFd>(std::move(place.dir));
    plan->working_set_name = std::move(place.name);
  } else if (plan->uffd) {
    const std::filesystem::path set(plan->memory_path + ".ws");
    if (!by_path) {
      plan->working_set_dir = std::make_shared<const base::UniqueFd>(std::move(catalog_dir));
    } else {
      base::UniqueFd dir(::open(set.parent_path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      if (!dir) return base::ErrnoError("open the directory of", set.string());
      plan->working_set_dir = std::make_shared<const base::UniqueFd>(std::move(dir));
    }
    plan->working_set_name = set.filename().string();
  }
  return absl::OkStatus();
}

absl::StatusOr<int> HandOverFile(const base::UniqueFd& file, LaunchSpec* spec) {
  if (spec->files.size() >= kMaxLaunchFiles) {
    return absl::InvalidArgumentError("a VM may be handed at most " +
                                      std::to_string(kMaxLaunchFiles) + " host files");
  }
  base::UniqueFd dup(::fcntl(file.Get(), F_DUPFD_CLOEXEC, 0));
  if (!dup) return base::ErrnoError("dup", "a snapshot file");
  spec->files.push_back(std::move(dup));
  return static_cast<int>(spec->files.size() - 1);
}

}  // namespace ember::emberd
