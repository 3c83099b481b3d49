#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <thread>
#include <charconv>
#include <optional>
#include <set>
#include <string_view>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

#include "vmm/base/atomic_file.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"
#include "vmm/emberd/launch_files.h"
#include "vmm/emberd/parent_cpu_weight.h"
#include "vmm/emberd/snapshot_publish.h"
#include "vmm/emberd/store.h"
#include "vmm/rules/vm_config_rules.h"
#include "vmm/emberd/vmm_view.h"

namespace ember::emberd {

namespace {

// A jailed VM's diff chain (JailChain), one "NAME HOST_PATH" line per memory file:
// in the VM's directory the chain its ember-vmm holds now, in a jailed snapshot's record
// directory the bases its state file names (none for a full snapshot). Its presence marks a
// snapshot a jailed ember-vmm took.
constexpr char kJailChainFile[] = "jail-chain";
constexpr char kJailBasesFile[] = "jail-bases";

// The path in a jail of what its VMM writes: `name` in the jail's output directory.
std::string JailOutput(const std::string& name) {
  return "/" + std::string(kJailOutputDir) + "/" + name;
}

absl::Status WriteJailChain(const std::string& path,
                            const JailChain& chain) {
  std::string text;
  for (const auto& [name, host] : chain) {
    if (host.find('\n') != std::string::npos) {
      return absl::InvalidArgumentError("snapshot_dir: " + host + " has a newline");
    }
    text += name + " " + host + "\n";
  }
  return WriteFileAtomic(path, text);
}

absl::StatusOr<JailChain> ReadJailChain(
    const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  JailChain chain;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    std::size_t space = line.find(' ');
    // A name is a plain file name in a jail's root or its output directory (JailFile::jail_name).
    if (space == 0 || space == std::string::npos || !IsJailFileName(line.substr(0, space)) ||
        line.compare(space + 1, 1, "/") != 0) {
      return absl::DataLossError(path + ": malformed line \"" + line + "\"");
    }
    chain.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  return chain;
}

// A vsock socket a jailed VMM may make: in its jail's output directory, the one directory it
// may write ("/out/NAME"), where emberd reaches it at <jail root>/out/NAME (the Functions'
// agents). Nothing else in the jail or on the host.
bool IsJailVsockPath(const std::string& path) {
  const std::string prefix = JailOutput("");
  return path.rfind(prefix, 0) == 0 && path.size() > prefix.size() &&
         IsJailFileName(path.substr(1));
}

// What a jailed ember-vmm cannot do, whatever emberd puts into its jail: reach a host path.
absl::Status CheckJailable(const v1::VmConfig& config) {
  auto refuse = [](const std::string& field) {
    return absl::FailedPreconditionError(
        field + ": not supported for a jailed VM (a jailed ember-vmm sees only its chroot; "
                "leave it empty)");
  };
  if (!config.vsock().uds_path().empty() && !IsJailVsockPath(config.vsock().uds_path())) {
    return refuse("vsock.uds_path");
  }
  if (!config.logger().log_path().empty()) return refuse("logger.log_path");
  if (!config.metrics().metrics_path().empty()) return refuse("metrics.metrics_path");
  return absl::OkStatus();
}


// The rule for a jailed restore's memory files: a clone maps them through a hard link in its
// jail, as a uid and gid of its own with the snapshot group as its one supplementary group, so
// they must be readable through that group (the group bits if the file is the group's, else
// the others'). Snapshots emberd moved out of a jail are the group's; a file on another
// filesystem than the jails is copied for the jail instead (JailFile::kLinkOrCopy), so anything
// readable will do.
absl::Status CheckJailCanMap(const std::string& field, const std::string& path,
                             const std::string& jail_dir, gid_t snapshot_gid) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return base::ErrnoError("stat", path);
  struct stat jails {};
  // Before its first VM the jails' directory may not exist: its parent is the chroot base.
  if (::stat(jail_dir.c_str(), &jails) != 0 &&
      ::stat(std::filesystem::path(jail_dir).parent_path().c_str(), &jails) != 0) {
    return base::ErrnoError("stat", jail_dir);
  }
  if (st.st_dev != jails.st_dev) return absl::OkStatus();
  mode_t bit = st.st_gid == snapshot_gid ? S_IRGRP : S_IROTH;
  if ((st.st_mode & bit) != 0) return absl::OkStatus();
  char mode[8];
  std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return absl::FailedPreconditionError(
      field + ": " + path + " (uid " + std::to_string(st.st_uid) + ", gid " +
      std::to_string(st.st_gid) + ", mode " + mode + ") is not readable by the snapshot group " +
      std::to_string(snapshot_gid) +
      ": a jailed clone maps its snapshot's memory through a hard link, as a uid of its own "
      "in that group. Snapshots emberd took of jailed VMs are the group's; give one taken "
      "with --no-jail to it (chown :" + std::to_string(snapshot_gid) +
      ", chmod g+r) to restore it jailed");
}


// The most a jailed VMM may write into one file (RLIMIT_FSIZE): its largest file is a snapshot
// of its memory; the rest (console, exit record, a diff's bitmap) are far smaller. Bounds the
// console log a guest fills.
constexpr std::uint64_t kFileSizeSlackMib = 64;

// A VM's cgroup limits beyond its guest memory: the VMM's own memory (its heap, stacks, rings,
// the page cache of the snapshots it writes, and in v2 the kernel's memory for it).
constexpr std::uint64_t kCgroupMemoryOverheadMib = 128;
// pids.max beyond a vCPU each: the VMM's own threads and the jailer's stand-in, plus io_uring's
// bounded workers, at most 4 per host CPU for each drive.
constexpr std::uint64_t kCgroupTaskSlack = 64;
constexpr std::uint64_t kIoUringWorkersPerCpu = 4;

// The --cgroup limits of a VM with `config` under `cgroups`: memory (guest + overhead), pids,
// and a CPU weight in proportion to its vCPUs (v2 cpu.weight 100 per vCPU up to the most,
// 10000; v1 cpu.shares 1024 per vCPU).
std::vector<std::string> CgroupOptions(const JailCgroups& cgroups, const v1::VmConfig& config) {
  const v1::MachineConfig& machine = config.machine_config();
  const std::uint64_t mib =
      (machine.has_mem_size_mib() ? machine.mem_size_mib() : rules::kDefaultMemMib);
  const std::uint64_t vcpus = machine.vcpu_count() != 0 ? machine.vcpu_count() : rules::kDefaultVcpus;
  const bool v2 = cgroups.version == 2;
  std::vector<std::string> options;
  for (const std::string& controller : cgroups.controllers) {
    std::string setting;
    if (controller == "memory") {
      setting = (v2 ? "memory.max=" : "memory.limit_in_bytes=") +
                std::to_string((mib + kCgroupMemoryOverheadMib) << 20);
    } else if (controller == "pids") {
      setting = "pids.max=" + std::to_string(vcpus + kCgroupTaskSlack +
                                             kIoUringWorkersPerCpu * cgroups.host_cpus *
                                                 static_cast<std::uint64_t>(config.drives_size()));
    } else if (controller == "cpu") {
      setting = v2 ? "cpu.weight=" + std::to_string(std::min<std::uint64_t>(10000, 100 * vcpus))
                   : "cpu.shares=" + std::to_string(1024 * vcpus);
    }
    if (!setting.empty()) options.insert(options.end(), {"--cgroup", setting});
  }
  return options;
}

// This VM's ember-jailer options: only the device nodes it uses (KVM; the tun device when it
// has a network interface; userfaultfd only for a UFFD restore), its taps
// made in its network namespace, and its file size bound.
std::vector<std::string> JailerOptions(const v1::VmConfig& config, const RestorePlan* restore) {
  std::vector<std::string> options = {"--device", "kvm"};
  if (config.network_interfaces_size() > 0) options.insert(options.end(), {"--device", "tun"});
  // A UFFD restore's page server opens /dev/userfaultfd (its uid may not call userfaultfd(2)).
  if (restore != nullptr && restore->uffd) {
    options.insert(options.end(), {"--device", "userfaultfd"});
  }
  for (const v1::NetworkInterface& iface : config.network_interfaces()) {
    if (!iface.host_dev_name().empty()) options.insert(options.end(), {"--tap", iface.host_dev_name()});
  }
  const v1::MachineConfig& machine = config.machine_config();
  std::uint64_t mib = (machine.has_mem_size_mib() ? machine.mem_size_mib() : rules::kDefaultMemMib) +
                      kFileSizeSlackMib;
  options.insert(options.end(),
                 {"--resource-limit", "fsize=" + std::to_string(mib * 1024 * 1024)});
  return options;
}

// Adds `host` to the files put into the jail as `name`; returns the path the jail sees.
std::string AddJailFile(LaunchSpec* spec, JailFile::How how, const std::string& host,
                        const std::string& name) {
  spec->jail_files.push_back(JailFile{how, std::filesystem::absolute(host).string(), name});
  return "/" + name;
}



class JailedView final : public VmmView {
 public:
  JailedView(std::string vms_dir, std::string jail_dir, JailIds ids,
             const base::PathRules* paths, JailCgroups cgroups, EventHub* events)
      : vms_dir_(std::move(vms_dir)),
        jail_dir_(std::move(jail_dir)),
        ids_(ids),
        own_leases_(ids.leases ? nullptr : std::make_unique<JailIdLeases>(ids)),
        leases_(ids.leases ? ids.leases : own_leases_.get()),
        paths_(paths),
        cgroups_(std::move(cgroups)),
        events_(events) {
    if (events_ != nullptr && cgroups_.version != 0) {
      exits_ = events_->Subscribe("");
      cgroup_sweeper_ = std::thread([this] { SweepCgroups(); });
    }
  }

  ~JailedView() override {
    // No VM is launched any more: the parent goes unless VMs that outlive emberd are in it.
    for (const std::string& mount : cgroups_.mounts) {
      ::rmdir((mount + "/" + cgroups_.parent).c_str());
    }
    if (!exits_) return;
    {
      std::lock_guard lock(exits_->mu);
      stopping_ = true;
    }
    exits_->cv.notify_all();
    cgroup_sweeper_.join();
    events_->Unsubscribe(exits_);
  }

  absl::Status CheckVmId(const std::string& vm_id) const override {
    // ember-jailer's ids: letters, digits and dashes.
    if (vm_id.find('_') == std::string::npos) return absl::OkStatus();
    return absl::InvalidArgumentError(
        "vm_id: \"" + vm_id + "\" has an underscore, which ember-jailer's ids (emberd "
        "--jailer) do not allow");
  }

  absl::Status PrepareLaunch(const v1::VmConfig& config, const RestorePlan* restore,
                             LaunchSpec* spec) override {
    // `config` is what the VMM will open (a clone's has its overrides applied).
    EMBER_RETURN_IF_ERROR(CheckJailable(config));
    ForgetEarlierStops(spec->vm_id);
    EMBER_ASSIGN_OR_RETURN(const std::uint32_t id, TakeId(spec->vm_id, spec->vm_dir));
    if (restore == nullptr) {
      EMBER_RETURN_IF_ERROR(PrepareBoot(config, spec));
    } else {
      EMBER_RETURN_IF_ERROR(PrepareRestore(*restore, config, spec));
    }
    spec->jailer_args = JailerOptions(config, restore);
    for (std::string& option : CgroupOptions(cgroups_, config)) {
      spec->jailer_args.push_back(std::move(option));
    }
    parent_weight_.Add(spec->vm_id, spec->jailer_args);
    spec->jailer_args.insert(spec->jailer_args.end(),
                             {"--uid", std::to_string(id), "--gid", std::to_string(id)});
    // A clone reads its snapshot's files through their group.
    if (restore != nullptr) {
      spec->jailer_args.insert(spec->jailer_args.end(),
                               {"--supplementary-gid", std::to_string(ids_.snapshot_gid())});
    }
    // The VM's directory links to the console in the jail, for people; emberd itself opens it
    // through OpenVmmFile.
    const std::string console = JailOutput("console.log");
    AddJailFile(spec, JailFile::How::kSymlinkHost, spec->vm_dir + "/console.log",
                console.substr(1));
    spec->vmm_args.insert(spec->vmm_args.end(),
                          {"--serial-out", console, "--exit-record", JailOutput("exit")});
    if (restore == nullptr) return absl::OkStatus();
    // The clone's ember-vmm names these as the bases of its first diff snapshot.
    JailChain chain = restore->jail_bases;
    chain.emplace_back(restore->jail_memory_name, restore->memory_path);
    EMBER_RETURN_IF_ERROR(WriteJailChain(spec->vm_dir + "/" + kJailChainFile, chain));
    std::lock_guard lock(mu_);
    chains_[spec->vm_id] = std::move(chain);
    return absl::OkStatus();
  }

  std::string ExitRecordPath(const std::string& vm_id) const override {
    return JailRoot(vm_id) + JailOutput("exit");
  }
  absl::StatusOr<base::UniqueFd> OpenVmmFile(const std::string& vm_id,
                                             const std::string& name) const override {
    // The output directory is the jail uid's: its VMM may have put anything there.
    return emberd::OpenVmmFile(JailRoot(vm_id) + "/" + kJailOutputDir, name, /*in_root=*/true);
  }

  void LoadVm(const std::string& vm_id) override {
    RecoverId(vm_id);
    const std::string path = vms_dir_ + "/" + vm_id + "/" + kJailChainFile;
    if (::access(path.c_str(), F_OK) != 0) return;
    absl::StatusOr<JailChain> chain = ReadJailChain(path);
    if (!chain.ok()) {
      // Only its next diff snapshot needs it, and ember-vmm refuses one without a base.
      EMBER_LOG(kWarn) << "emberd: " << chain.status().message();
      return;
    }
    std::lock_guard lock(mu_);
    chains_[vm_id] = std::move(*chain);
  }

  absl::Status RemoveVm(const std::string& vm_id) override {
    EMBER_RETURN_IF_ERROR(RemoveTree(jail_dir_ + "/" + vm_id));
    RemoveCgroup(vm_id);
    // Only once nothing of its uid is left in its jail may another VM have the uid.
    std::lock_guard lock(mu_);
    chains_.erase(vm_id);
    leases_->Release(vm_id);
    return absl::OkStatus();
  }

  absl::Status PlanRestore(const std::string& field, RestorePlan* plan) const override;

  absl::Status CheckOverrides(const std::string& where,
                              const v1::RestoreOverrides& overrides) const override {
    if (overrides.vsock_uds_path().empty() || IsJailVsockPath(overrides.vsock_uds_path())) {
      return absl::OkStatus();
    }
    return absl::FailedPreconditionError(
        where + ".vsock_uds_path: not supported for a jailed VM (a jailed ember-vmm sees "
                "only its chroot; leave it empty)");
  }

  absl::Status CheckDriveFile(const std::string& vm_id, int file, bool read_only) const override {
    const std::optional<std::uint32_t> held = leases_->IdOf(vm_id);
    if (!held) return absl::FailedPreconditionError("VM \"" + vm_id + "\" has no jail uid");
    const std::uint32_t id = *held;
    // The permission check the kernel makes when the jailed VMM opens a drive it was given at
    // Create (its uid and gid are both `id`), on the mode bits (an ACL granting more is not
    // taken into account: stricter, never looser).
    struct stat info {};
    if (::fstat(file, &info) != 0) return base::ErrnoError("fstat", "path_on_host");
    const mode_t bits = info.st_uid == id   ? (info.st_mode >> 6) & 7
                        : info.st_gid == id ? (info.st_mode >> 3) & 7
                                            : info.st_mode & 7;
    const mode_t needed = read_only ? 4 : 6;
    if ((bits & needed) != needed) {
      return absl::InvalidArgumentError(
          "path_on_host: VM \"" + vm_id + "\" runs jailed as uid and gid " + std::to_string(id) +
          ", which may not open this file " + (read_only ? "to read" : "to read and write") +
          " (its mode is " + std::to_string((info.st_mode >> 6) & 7) +
          std::to_string((info.st_mode >> 3) & 7) + std::to_string(info.st_mode & 7) +
          ", owner " + std::to_string(info.st_uid) + ":" + std::to_string(info.st_gid) +
          "): a drive a Create gave it would fail the same way");
    }
    return absl::OkStatus();
  }

  absl::Status CheckSnapshot(const std::string& vm_id, bool diff) const override {
    std::lock_guard lock(mu_);
    auto it = chains_.find(vm_id);
    if (!diff || (it != chains_.end() && !it->second.empty())) return absl::OkStatus();
    // emberd names a jailed diff's bases (kJailBasesFile) from this chain.
    return absl::FailedPreconditionError(
        "type: a DIFF snapshot needs an earlier snapshot (or a restore) of VM \"" + vm_id +
        "\" to apply onto, and emberd knows of none");
  }

  SnapshotFiles SnapshotTarget(const v1::Snapshot& snapshot) const override {
    // The jailed ember-vmm writes into its jail's output directory, under names that are also
    // what a clone's jail calls them: the names its diff snapshots will give as their bases.
    return {JailOutput(snapshot.snapshot_id() + ".state"),
            JailOutput(snapshot.snapshot_id() + ".mem"), /*scratch=*/true};
  }

  absl::Status FinishSnapshot(const v1::Snapshot& snapshot,
                              const std::string& record_dir) override;

  void AbandonSnapshot(const v1::Snapshot& snapshot) override {
    const SnapshotFiles files = SnapshotTarget(snapshot);
    const std::string root = JailRoot(snapshot.vm_id());
    ::unlink((root + files.state).c_str());
    ::unlink((root + files.memory).c_str());
  }

 private:
  [[nodiscard]] std::string JailRoot(const std::string& vm_id) const {
    return jail_dir_ + "/" + vm_id + "/root";
  }
  // The uid (and gid) of `vm_id`'s ember-vmm: the one it has, or a free one from the range,
  // recorded in `vm_dir` (kJailIdFile) for the next emberd. RESOURCE_EXHAUSTED when every id of
  // the range belongs to a VM.
  [[nodiscard]] absl::StatusOr<std::uint32_t> TakeId(const std::string& vm_id,
                                                     const std::string& vm_dir);
  // Marks the id a previous emberd gave `vm_id` (its kJailIdFile) as taken.
  void RecoverId(const std::string& vm_id);
  // Removes `vm_id`'s cgroup from every hierarchy (never the parent, which other VMs' jailers
  // may be making theirs in at any moment). Its tasks
  // have been reaped; the kernel may take a moment to let the cgroup go.
  void RemoveCgroup(const std::string& vm_id) const;
  // cgroup_sweeper_'s loop: removes a VM's cgroup once it is STOPPED, until stopping_.
  void SweepCgroups();
  // Before `vm_id` is launched (again): a STOPPED event of an earlier VM of that id that the
  // sweeper has not acted on yet must not remove the cgroup the new VM's jailer makes.
  void ForgetEarlierStops(const std::string& vm_id);
  // `vm_id`'s uid, or nullopt if it has none.
  [[nodiscard]] std::optional<std::uint32_t> IdOf(const std::string& vm_id) const;
  // Writes the config the jailed VMM sees and names the files it needs in the jail.
  [[nodiscard]] absl::Status PrepareBoot(const v1::VmConfig& config, LaunchSpec* spec) const;
  // Puts the snapshot's files and drives into the clone's jail.
  [[nodiscard]] absl::Status PrepareRestore(const RestorePlan& plan, const v1::VmConfig& config,
                                            LaunchSpec* spec) const;

  const std::string vms_dir_;
  const std::string jail_dir_;
  const JailIds ids_;
  // Each VM's uid and gid (shared with the VMM pool, whose slots' ids VMs take over).
  const std::unique_ptr<JailIdLeases> own_leases_;  // when emberd gave the view none
  JailIdLeases* const leases_;
  // AddJailFile for a kernel, initrd or drive: linked from the file emberd checked against
  // its path rules (launch_files.h), not from its name, which may lead elsewhere by then.
  [[nodiscard]] absl::StatusOr<std::string> AddCheckedJailFile(LaunchSpec* spec,
                                                               JailFile::How how,
                                                               const std::string& field,
                                                               const std::string& host,
                                                               const std::string& name,
                                                               ImageDirs images =
                                                                   ImageDirs::kRefused) const {
    std::string seen = AddJailFile(spec, how, host, name);
    if (paths_ == nullptr) return seen;
    EMBER_ASSIGN_OR_RETURN(spec->jail_files.back().file,
                           AddCheckedFile(*paths_, field, host, spec, images));
    return seen;
  }
  const base::PathRules* const paths_;  // null: files linked by name (tests)
  const JailCgroups cgroups_;
  mutable ParentCpuWeight parent_weight_{cgroups_};  // the VMs' parent weighs as they do
  EventHub* const events_;  // may be null: then cgroups go only with RemoveVm
  std::shared_ptr<EventHub::Watcher> exits_;  // every VM's events, for their STOPPED
  bool stopping_ = false;                     // guarded by exits_->mu
  std::thread cgroup_sweeper_;
  // Held by the sweeper from its check of relaunched_ to its removal, and by
  // ForgetEarlierStops: a launch never overtakes a removal it should have stopped.
  std::mutex sweep_mu_;
  // guarded by sweep_mu_: VMs launched again since the sweeper took its current events
  std::set<std::string> relaunched_;
  mutable std::mutex mu_;
  // Per VM, the memory files its ember-vmm names as the bases of its next diff snapshot; also
  // in its directory's kJailChainFile.
  std::map<std::string, JailChain> chains_;  // guarded by mu_
};

absl::Status JailedView::PrepareBoot(const v1::VmConfig& config, LaunchSpec* spec) const {
  v1::VmConfig jailed = config;
  auto add = [&](JailFile::How how, const std::string& host, const std::string& name) {
    return AddJailFile(spec, how, host, name);
  };
  v1::BootSource* boot = jailed.mutable_boot_source();
  if (!boot->kernel_image_path().empty()) {
    EMBER_ASSIGN_OR_RETURN(
        *boot->mutable_kernel_image_path(),
        AddCheckedJailFile(spec, JailFile::How::kLinkOrCopy, "config.boot-source.kernel_image_path",
                           boot->kernel_image_path(), "kernel"));
  }
  if (!boot->initrd_path().empty()) {
    EMBER_ASSIGN_OR_RETURN(
        *boot->mutable_initrd_path(),
        AddCheckedJailFile(spec, JailFile::How::kLinkOrCopy, "config.boot-source.initrd_path",
                           boot->initrd_path(), "initrd"));
  }
  for (int i = 0; i < jailed.drives_size(); ++i) {
    v1::Drive* drive = jailed.mutable_drives(i);
    if (drive->path_on_host().empty()) continue;
    EMBER_ASSIGN_OR_RETURN(
        *drive->mutable_path_on_host(),
        AddCheckedJailFile(spec, JailFile::How::kLink,
                           "config.drives[" + std::to_string(i) + "].path_on_host",
                           drive->path_on_host(), "drive" + std::to_string(i),
                           DriveImageDirs(*drive)));
  }
  const std::string jail_config = spec->vm_dir + "/jail-config.pb";
  // Made anew for every launch and read only by the fork server copying it into the jail a
  // moment later: no fsync (two of them cost ~17 ms of a Create on a loaded host).
  EMBER_RETURN_IF_ERROR(base::WriteFileAtomically(jail_config, jailed.SerializeAsString(), 0600,
                                                  base::AtomicFile::Durability::kRenameOnly));
  add(JailFile::How::kCopy, jail_config, "config.pb");
  spec->vmm_args = {"--config-proto", "/config.pb"};
  return absl::OkStatus();
}

absl::Status JailedView::PrepareRestore(const RestorePlan& plan, const v1::VmConfig& config,
                                        LaunchSpec* spec) const {
  RestorePlan jailed = plan;  // the same restore, in the paths the jail sees
  // The state file is read once: a private copy costs little and needs no rule on its owner.
  // Both are put into the jail from the files emberd opened and checked (their MAC too), not
  // from their names (restore_plan.h).
  jailed.state_path = AddJailFile(spec, JailFile::How::kCopy, plan.state_path, "snapshot.state");
  if (plan.state_file) {
    EMBER_ASSIGN_OR_RETURN(spec->jail_files.back().file, HandOverFile(*plan.state_file, spec));
  }
  // Memory is mapped MAP_PRIVATE read-only, so every clone can share the file's inode.
  jailed.memory_path =
      AddJailFile(spec, JailFile::How::kLinkOrCopy, plan.memory_path, plan.jail_memory_name);
  if (plan.memory_file) {
    EMBER_ASSIGN_OR_RETURN(spec->jail_files.back().file, HandOverFile(*plan.memory_file, spec));
  }
  for (const auto& [name, host] : plan.jail_bases) {
    AddJailFile(spec, JailFile::How::kLinkOrCopy, host, name);
  }
  // The state file names the drives as the snapshotted VM saw them (a jail's "/drive0" or a
  // host path), neither of which this jail has: every drive gets a link in the jail and an
  // override to it. Sorted by id so that the jail's drive names are reproducible.
  // With no recorded configuration, the overrides are all emberd knows of the drives.
  jailed.overrides.clear_drive_path_on_host();
  int index = 0;
  for (const auto& [id, drive] : RestoredDrives(config, plan.overrides)) {
    EMBER_ASSIGN_OR_RETURN((*jailed.overrides.mutable_drive_path_on_host())[id],
                           AddCheckedJailFile(spec, JailFile::How::kLink, "drive \"" + id + "\"",
                                              drive.path, "drive" + std::to_string(index++),
                                              drive.images));
  }
  const std::string overrides = spec->vm_dir + "/restore-overrides.pb";
  EMBER_ASSIGN_OR_RETURN(spec->vmm_args, RestoreArgs(jailed, overrides, "/restore-overrides.pb"));
  AddJailFile(spec, JailFile::How::kCopy, overrides, "restore-overrides.pb");
  // A userfaultfd clone's working set: the recorded one copied in beside the memory file, where
  // ember-vmm looks for it; without one, the set it records goes to its output directory.
  // The set is the file emberd opened and checked (OpenRestoreFiles), never reopened by its
  // name: that may lead to a FIFO (the fork server would block copying it) or out of the
  // allowed directories by now.
  if (plan.uffd && plan.prefetch) {
    if (!plan.working_set_file) {
      return absl::InternalError("a prefetching restore has no working set opened");
    }
    AddJailFile(spec, JailFile::How::kCopy, plan.memory_path + ".ws",
                plan.jail_memory_name + ".ws");
    EMBER_ASSIGN_OR_RETURN(spec->jail_files.back().file,
                           HandOverFile(*plan.working_set_file, spec));
  } else if (plan.uffd) {
    spec->vmm_args.insert(spec->vmm_args.end(), {"--working-set", JailOutput(kJailWorkingSetFile)});
  }
  return absl::OkStatus();
}

absl::Status JailedView::FinishSnapshot(const v1::Snapshot& snapshot,
                                        const std::string& record_dir) {
  const SnapshotFiles files = SnapshotTarget(snapshot);
  const std::string root = JailRoot(snapshot.vm_id());
  std::optional<std::uint32_t> uid = IdOf(snapshot.vm_id());
  if (!uid) {
    return absl::InternalError("VM \"" + snapshot.vm_id() + "\" has no jail uid on record");
  }
  // New files emberd writes, root's and the snapshot group's (0440): the VM that wrote them
  // keeps no way to change what its clones will map (snapshot_publish.h).
  const PublishedFile owner{/*uid=*/0, ids_.snapshot_gid()};
  EMBER_RETURN_IF_ERROR(
      PublishSnapshotFile(root + files.state, *uid, snapshot.state_path(), owner));
  EMBER_RETURN_IF_ERROR(
      PublishSnapshotFile(root + files.memory, *uid, snapshot.memory_path(), owner));
  // Like ember-vmm's own chain: a full snapshot starts it afresh, a diff extends it.
  std::lock_guard lock(mu_);
  JailChain& chain = chains_[snapshot.vm_id()];
  JailChain bases =
      snapshot.type() == v1::CreateSnapshotRequest::DIFF ? chain : JailChain();
  EMBER_RETURN_IF_ERROR(WriteJailChain(record_dir + "/" + kJailBasesFile, bases));
  bases.emplace_back(files.memory.substr(1), snapshot.memory_path());
  EMBER_RETURN_IF_ERROR(
      WriteJailChain(vms_dir_ + "/" + snapshot.vm_id() + "/" + kJailChainFile, bases));
  chain = std::move(bases);
  return absl::OkStatus();
}

absl::StatusOr<std::uint32_t> JailedView::TakeId(const std::string& vm_id,
                                                 const std::string& vm_dir) {
  if (std::optional<std::uint32_t> held = leases_->IdOf(vm_id)) return *held;
  EMBER_ASSIGN_OR_RETURN(const std::uint32_t id, leases_->Take(vm_id));
  // Freed again by RemoveVm, which a failed launch calls too.
  EMBER_RETURN_IF_ERROR(RecordJailId(vm_dir, id));
  return id;
}

void JailedView::RecoverId(const std::string& vm_id) {
  const std::string path = vms_dir_ + "/" + vm_id + "/" + kJailIdFile;
  if (::access(path.c_str(), F_OK) != 0) return;  // a VM of an emberd without uid ranges
  absl::StatusOr<std::string> text = ReadFile(path);
  std::uint32_t id = 0;
  const char* end = nullptr;
  if (text.ok()) {
    auto parsed = std::from_chars(text->data(), text->data() + text->size(), id);
    end = parsed.ec == std::errc() ? parsed.ptr : nullptr;
  }
  if (end == nullptr || std::string_view(end, text->data() + text->size() - end) != "\n") {
    EMBER_LOG(kWarn) << "emberd: " << path << " is not a uid; VM " << vm_id << " keeps none";
    return;
  }
  // Outside today's range (emberd restarted with another one), it is still this VM's: no VM
  // gets it while this one lives, and a later one in range is never given twice.
  if (!leases_->Recover(vm_id, id)) {
    EMBER_LOG(kWarn) << "emberd: VM " << vm_id << " records uid " << id
                     << ", which another VM has too";
  }
}

void JailedView::RemoveCgroup(const std::string& vm_id) const {
  if (cgroups_.version == 0) return;
  parent_weight_.Remove(vm_id);
  for (const std::string& mount : cgroups_.mounts) {
    const std::string dir = mount + "/" + cgroups_.parent + "/" + vm_id;
    int tries = 0;
    while (::rmdir(dir.c_str()) != 0 && errno == EBUSY && ++tries < 100) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (::access(dir.c_str(), F_OK) == 0) {
      EMBER_LOG(kWarn) << "emberd: VM " << vm_id << "'s cgroup " << dir
                       << " is still there: " << std::strerror(errno);
    }
    // The parent stays: removed while empty, it could go between another VM's jailer finding
    // it and making that VM's cgroup in it, failing that VM's Create.
  }
}

void JailedView::SweepCgroups() {
  std::unique_lock lock(exits_->mu);
  while (true) {
    exits_->cv.wait(lock, [&] { return stopping_ || !exits_->queue.empty(); });
    if (stopping_) return;
    std::deque<v1::Event> events;
    events.swap(exits_->queue);
    if (exits_->overflowed) {
      // Events were dropped: the cgroups of the VMs whose STOPPED was among them stay until
      // those VMs are deleted (RemoveVm).
      exits_->overflowed = false;
      EMBER_LOG(kWarn) << "emberd: the cgroup sweeper fell behind; some stopped VMs keep their "
                          "cgroup until they are deleted";
    }
    {
      // Every launch from here on comes after these events.
      std::lock_guard sweep(sweep_mu_);
      relaunched_.clear();
    }
    lock.unlock();
    for (const v1::Event& event : events) {
      // STOPPED, not EXITED: a VMM found gone when emberd restarts is STOPPED with no EXITED.
      if (event.kind() == v1::Event::STATE && event.state() == v1::Vm::STOPPED) {
        std::lock_guard sweep(sweep_mu_);
        if (relaunched_.count(event.vm_id()) == 0) RemoveCgroup(event.vm_id());
      }
    }
    lock.lock();
  }
}

void JailedView::ForgetEarlierStops(const std::string& vm_id) {
  if (!exits_) return;
  {
    // Those still queued: none of this launch's own can be among them yet.
    std::lock_guard lock(exits_->mu);
    std::erase_if(exits_->queue, [&](const v1::Event& event) {
      return event.vm_id() == vm_id && event.kind() == v1::Event::STATE &&
             event.state() == v1::Vm::STOPPED;
    });
  }
  // Those the sweeper holds: it skips the VM from now on, and a removal it is making now
  // ends before this returns (and so before the new VM's jailer makes its cgroup).
  std::lock_guard sweep(sweep_mu_);
  relaunched_.insert(vm_id);
}

std::optional<std::uint32_t> JailedView::IdOf(const std::string& vm_id) const {
  return leases_->IdOf(vm_id);
}

absl::Status JailedView::PlanRestore(const std::string& field, RestorePlan* plan) const {
  std::string bases_file = plan->record_dir + "/" + kJailBasesFile;
  if (!plan->record_dir.empty() && ::access(bases_file.c_str(), F_OK) == 0) {
    EMBER_ASSIGN_OR_RETURN(plan->jail_bases, ReadJailChain(bases_file));
  } else if (plan->diff) {
    return absl::FailedPreconditionError(
        field + ": snapshot \"" + plan->snapshot_id +
        "\" is a DIFF snapshot taken with --no-jail: its state file names its base memory "
        "files by host paths, which a jail cannot see; fold it into a full snapshot "
        "(ember-snapshot merge) and restore that");
  }
  // The snapshot's own name where emberd has one, so the clone's later diffs name it so too.
  plan->jail_memory_name = field == "snapshot_id" ? plan->snapshot_id + ".mem" : "snapshot.mem";
  auto taken = [&] {
    return std::any_of(plan->jail_bases.begin(), plan->jail_bases.end(),
                       [&](const auto& base) { return base.first == plan->jail_memory_name; });
  };
  for (int n = 1; taken(); ++n) plan->jail_memory_name = "snapshot-" + std::to_string(n) + ".mem";
  EMBER_RETURN_IF_ERROR(CheckJailCanMap(field, plan->memory_path, jail_dir_, ids_.snapshot_gid()));
  for (const auto& [name, host] : plan->jail_bases) {
    if (::access(host.c_str(), R_OK) != 0) {
      return absl::NotFoundError(field + ": cannot read " + host + ", a base of this diff "
                                 "snapshot: " + std::strerror(errno));
    }
    EMBER_RETURN_IF_ERROR(CheckJailCanMap(field, host, jail_dir_, ids_.snapshot_gid()));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<std::string> IdleSlotJailerOptions(const JailCgroups& cgroups) {
  // No file size bound: a slot lowers its own to its VM's at its launch (VmmPool).
  const v1::VmConfig defaults;
  std::vector<std::string> options = {"--device", "kvm"};
  for (std::string& option : CgroupOptions(cgroups, defaults)) options.push_back(std::move(option));
  return options;
}

std::unique_ptr<VmmView> MakeJailedView(std::string vms_dir, std::string jail_dir, JailIds ids,
                                        const base::PathRules* paths, JailCgroups cgroups,
                                        EventHub* events) {
  return std::make_unique<JailedView>(std::move(vms_dir), std::move(jail_dir), ids, paths,
                                      std::move(cgroups), events);
}

}  // namespace ember::emberd
