#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>

#include "vmm/base/atomic_file.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/emberd/launch_files.h"
#include "vmm/emberd/store.h"
#include "vmm/emberd/vmm_view.h"

namespace ember::emberd {

namespace {

constexpr char kUnjailedFile[] = "UNJAILED";
constexpr char kUnjailedText[] =
    "WARNING: this VM's ember-vmm was started by emberd --no-jail: it runs as root with all "
    "capabilities in the host's mount, pid, ipc, uts and network namespaces. For development "
    "only.\n";

// An unjailed ember-vmm opens every path emberd gives it as it is.
class DirectView final : public VmmView {
 public:
  DirectView(std::string vms_dir, const base::PathRules* paths)
      : vms_dir_(std::move(vms_dir)), paths_(paths) {}

  absl::Status CheckVmId(const std::string&) const override { return absl::OkStatus(); }

  absl::Status PrepareLaunch(const v1::VmConfig& config, const RestorePlan* restore,
                             LaunchSpec* spec) override {
    const std::string& dir = spec->vm_dir;
    if (restore == nullptr && paths_ == nullptr) {
      spec->vmm_args = {"--config-proto", dir + "/config.pb"};
    } else if (restore == nullptr) {
      EMBER_RETURN_IF_ERROR(PrepareBoot(config, spec));
    } else {
      RestorePlan direct = *restore;
      if (paths_ != nullptr) EMBER_RETURN_IF_ERROR(HandOverDrives(config, &direct, spec));
      // The state file emberd opened and checked (its MAC too), not what its name leads to by
      // the time the VMM opens it; so too its memory file, its diff's bases and its working
      // set (or the directory the VMM records one in).
      if (paths_ != nullptr) EMBER_RETURN_IF_ERROR(HandOverSnapshotFiles(&direct, spec));
      const std::string overrides = dir + "/restore-overrides.pb";
      EMBER_ASSIGN_OR_RETURN(spec->vmm_args, RestoreArgs(direct, overrides, overrides));
      // A drive or vsock path that the state file names and no override replaces: ember-vmm
      // takes it only where a client's own path would pass (ember-vmm refuses it with none);
      // never in emberd's read-only image directories, which Dirs() leaves out.
      for (const std::string& allowed : paths_ != nullptr ? paths_->Dirs()
                                                         : std::vector<std::string>()) {
        spec->vmm_args.insert(spec->vmm_args.end(), {"--allow-dir", allowed});
      }
    }
    // Every file it writes later lies in a directory emberd hands it (OpenSnapshotDir, a
    // working set's place): its filter then opens no directory by name.
    if (paths_ != nullptr) spec->vmm_args.push_back("--dirs-by-fd");
    spec->vmm_args.insert(spec->vmm_args.end(), {"--serial-out", dir + "/console.log",
                                                 "--exit-record", ExitRecordPath(spec->vm_id)});
    // Loudly, in the log and beside the VM's record: this VMM runs as root with every
    // capability in the host's namespaces.
    EMBER_LOG(kWarn) << "emberd: VM \"" << spec->vm_id << "\" runs UNJAILED (emberd --no-jail): "
                     << "its ember-vmm is root with all capabilities in the host's namespaces";
    return WriteFileAtomic(dir + "/" + kUnjailedFile, kUnjailedText);
  }

  std::string ExitRecordPath(const std::string& vm_id) const override {
    return vms_dir_ + "/" + vm_id + "/exit";
  }
  absl::StatusOr<base::UniqueFd> OpenVmmFile(const std::string& vm_id,
                                             const std::string& name) const override {
    return emberd::OpenVmmFile(vms_dir_ + "/" + vm_id, name, /*in_root=*/false);
  }

  void LoadVm(const std::string&) override {}
  absl::Status RemoveVm(const std::string&) override { return absl::OkStatus(); }

  absl::Status PlanRestore(const std::string&, RestorePlan*) const override {
    return absl::OkStatus();
  }
  absl::Status CheckOverrides(const std::string&, const v1::RestoreOverrides&) const override {
    return absl::OkStatus();
  }

  absl::Status CheckSnapshot(const std::string&, bool) const override {
    return absl::OkStatus();
  }
  SnapshotFiles SnapshotTarget(const v1::Snapshot& snapshot) const override {
    return {snapshot.state_path(), snapshot.memory_path()};
  }
  absl::StatusOr<base::UniqueFd> OpenSnapshotDir(const v1::Snapshot& snapshot,
                                                 bool clients) const override {
    // Open for reading: the VMM syncs the directory through this fd.
    constexpr int kFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    const std::string dir = std::filesystem::path(snapshot.state_path()).parent_path().string();
    base::UniqueFd fd;
    if (clients && paths_ != nullptr) {
      // By the rule the request passed: a directory swapped for a symlink out since is refused.
      EMBER_ASSIGN_OR_RETURN(base::PathRules::Place place,
                             paths_->OpenPlace("snapshot_dir", snapshot.state_path()));
      fd.Reset(::openat(place.dir.Get(), ".", kFlags));
    } else {
      fd.Reset(::open(dir.c_str(), kFlags));
    }
    if (!fd) {
      return absl::InvalidArgumentError("snapshot_dir: cannot open " + dir + ": " +
                                        std::strerror(errno));
    }
    return fd;
  }
  absl::Status FinishSnapshot(const v1::Snapshot&, const std::string&) override {
    return absl::OkStatus();
  }
  void AbandonSnapshot(const v1::Snapshot&) override {}

 private:
  // The VMM's configuration names the kernel, initrd and drives by the files emberd checked
  // (inherited fds, launch_files.h), not by their paths, which may lead elsewhere by the time
  // the VMM opens them.
  absl::Status PrepareBoot(const v1::VmConfig& config, LaunchSpec* spec) const {
    v1::VmConfig launch = config;
    auto hand_over = [&](const std::string& field, std::string* path) -> absl::Status {
      if (path->empty()) return absl::OkStatus();
      EMBER_ASSIGN_OR_RETURN(int index, AddCheckedFile(*paths_, field, *path, spec));
      *path = InheritedFilePath(static_cast<std::size_t>(index));
      return absl::OkStatus();
    };
    v1::BootSource* boot = launch.mutable_boot_source();
    std::string kernel = boot->kernel_image_path();
    EMBER_RETURN_IF_ERROR(hand_over("config.boot-source.kernel_image_path", &kernel));
    if (!kernel.empty()) boot->set_kernel_image_path(kernel);
    std::string initrd = boot->initrd_path();
    EMBER_RETURN_IF_ERROR(hand_over("config.boot-source.initrd_path", &initrd));
    if (!initrd.empty()) boot->set_initrd_path(initrd);
    for (int i = 0; i < launch.drives_size(); ++i) {
      // A read-only drive may be one of emberd's function images (a deploy VM's root): the
      // VMM is told it is read-only by this very configuration.
      v1::Drive* drive = launch.mutable_drives(i);
      if (drive->path_on_host().empty()) continue;
      EMBER_ASSIGN_OR_RETURN(
          int index, AddCheckedFile(*paths_, "config.drives[" + std::to_string(i) +
                                                 "].path_on_host",
                                    drive->path_on_host(), spec, DriveImageDirs(*drive)));
      drive->set_path_on_host(InheritedFilePath(static_cast<std::size_t>(index)));
    }
    // The log the VMM appends to is the file emberd opened; its vsock socket and metrics file,
    // which it makes (and remakes) itself, are named inside the directory emberd resolved.
    if (!launch.logger().log_path().empty()) {
      EMBER_ASSIGN_OR_RETURN(int index, AddCheckedAppendFile(*paths_, "config.logger.log_path",
                                                             launch.logger().log_path(), spec));
      launch.mutable_logger()->set_log_path(InheritedFilePath(static_cast<std::size_t>(index)));
    }
    if (!launch.metrics().metrics_path().empty()) {
      EMBER_ASSIGN_OR_RETURN(*launch.mutable_metrics()->mutable_metrics_path(),
                             AddCheckedPlace(*paths_, "config.metrics.metrics_path",
                                             launch.metrics().metrics_path(), spec));
    }
    if (!launch.vsock().uds_path().empty()) {
      EMBER_ASSIGN_OR_RETURN(*launch.mutable_vsock()->mutable_uds_path(),
                             AddCheckedPlace(*paths_, "config.vsock.uds_path",
                                             launch.vsock().uds_path(), spec));
    }
    const std::string path = spec->vm_dir + "/vmm-config.pb";
    // Made anew for every launch and read by the VMM at once: no fsync (two of them cost
    // ~17 ms of a Create on a loaded host).
    EMBER_RETURN_IF_ERROR(base::WriteFileAtomically(path, launch.SerializeAsString(), 0600,
                                                    base::AtomicFile::Durability::kRenameOnly));
    spec->vmm_args = {"--config-proto", path};
    return absl::OkStatus();
  }

  // Every drive of a clone, whether its file is the snapshot's (`config`, when emberd recorded
  // it) or an override's, is overridden with the file emberd checked.
  absl::Status HandOverDrives(const v1::VmConfig& config, RestorePlan* plan,
                              LaunchSpec* spec) const {
    for (const auto& [id, file] : RestoredDrives(config, plan->overrides)) {
      EMBER_ASSIGN_OR_RETURN(
          int index, AddCheckedFile(*paths_, "drive \"" + id + "\"", file.path, spec, file.images));
      (*plan->overrides.mutable_drive_path_on_host())[id] =
          InheritedFilePath(static_cast<std::size_t>(index));
    }
    // So is its vsock socket (`config` has the override applied), in the directory checked.
    if (!config.vsock().uds_path().empty()) {
      EMBER_ASSIGN_OR_RETURN(
          *plan->overrides.mutable_vsock_uds_path(),
          AddCheckedPlace(*paths_, "vsock_uds_path", config.vsock().uds_path(), spec));
    }
    return absl::OkStatus();
  }

  // The files OpenRestoreFiles opened for `plan` become the VMM's: its state file, and its
  // memory file, diff bases and working set, which it names as emberd does (a later diff
  // names its bases so) but opens only as the files handed over.
  static absl::Status HandOverSnapshotFiles(RestorePlan* plan, LaunchSpec* spec) {
    auto hand_over = [&](const base::UniqueFd& file) -> absl::StatusOr<std::string> {
      EMBER_ASSIGN_OR_RETURN(int index, HandOverFile(file, spec));
      return InheritedFilePath(static_cast<std::size_t>(index));
    };
    if (plan->state_file) {
      EMBER_ASSIGN_OR_RETURN(plan->state_path, hand_over(*plan->state_file));
    }
    if (plan->memory_file) {
      plan->vmm_memory_name = plan->memory_path;
      EMBER_ASSIGN_OR_RETURN(plan->memory_path, hand_over(*plan->memory_file));
    }
    for (std::size_t i = 0; i < plan->base_files.size(); ++i) {
      EMBER_ASSIGN_OR_RETURN(std::string file, hand_over(*plan->base_files[i]));
      plan->vmm_base_files.emplace_back(plan->base_memory_paths[i], std::move(file));
    }
    if (plan->working_set_file) {
      EMBER_ASSIGN_OR_RETURN(plan->vmm_working_set, hand_over(*plan->working_set_file));
    } else if (plan->working_set_dir) {
      EMBER_ASSIGN_OR_RETURN(std::string dir, hand_over(*plan->working_set_dir));
      plan->vmm_working_set = dir + "/" + plan->working_set_name;
    }
    return absl::OkStatus();
  }

  const std::string vms_dir_;
  const base::PathRules* const paths_;
};

}  // namespace

std::unique_ptr<VmmView> MakeDirectView(std::string vms_dir, const base::PathRules* paths) {
  return std::make_unique<DirectView>(std::move(vms_dir), paths);
}

}  // namespace ember::emberd
