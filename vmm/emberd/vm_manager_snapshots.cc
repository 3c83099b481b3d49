// VmManager's snapshots: writing one of a paused VM, restoring clones from one, and the
// catalog's list, delete and trust (vm_manager.h).
#include "vmm/emberd/vm_manager.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdint>
#include <filesystem>

#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/emberd/control_requests.h"
#include "vmm/emberd/store.h"

namespace ember::emberd {

absl::StatusOr<v1::VmConfig> VmManager::CheckSnapshotable(Entry& entry,
                                                          const v1::CreateSnapshotRequest& request,
                                                          v1::Snapshot* snapshot) {
  const bool diff = request.type() == v1::CreateSnapshotRequest::DIFF;
  {
    std::lock_guard lock(entry.mu);
    if (diff) snapshot->set_base_snapshot_id(entry.last_snapshot_id);
    if (entry.vm.state() != v1::Vm::PAUSED) {
      return absl::FailedPreconditionError("cannot snapshot VM \"" + request.vm_id() +
                                           "\": it is " + StateName(entry.vm.state()) +
                                           ", not PAUSED (pause it first)");
    }
    if (diff && !entry.vm.config().machine_config().track_dirty_pages()) {
      return absl::FailedPreconditionError(
          "type: a DIFF snapshot needs machine-config.track_dirty_pages, which VM \"" +
          request.vm_id() + "\" was created without");
    }
  }
  EMBER_RETURN_IF_ERROR(view_->CheckSnapshot(request.vm_id(), diff));
  std::lock_guard lock(entry.mu);
  return entry.vm.config();
}

absl::StatusOr<v1::Snapshot> VmManager::CreateSnapshot(const v1::CreateSnapshotRequest& request) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(request.vm_id()));
  std::lock_guard op(entry->op_mu);
  v1::Snapshot snapshot;
  EMBER_ASSIGN_OR_RETURN(v1::VmConfig config, CheckSnapshotable(*entry, request, &snapshot));
  // Reserved; recorded below or given up on failure.
  snapshot.set_snapshot_id(catalog_->Reserve(request.vm_id(), NowUnixMs()));
  const std::string record_dir = catalog_->RecordDir(snapshot.snapshot_id());
  const std::string dir = request.snapshot_dir().empty() ? record_dir : request.snapshot_dir();
  snapshot.set_vm_id(request.vm_id());
  snapshot.set_type(request.type());
  snapshot.set_state_path(dir + "/state");
  snapshot.set_memory_path(dir + "/memory");
  snapshot.set_created_unix_ms(NowUnixMs());
  v1::Snapshot written;
  absl::Status status = WriteSnapshot(*entry, snapshot, config, &written);
  if (status.ok()) status = catalog_->Commit(written);
  if (!status.ok()) {
    // Written but not recorded (emberd's own disk full): no files of a snapshot nobody knows.
    if (!written.state_path().empty()) catalog_->RemoveUnfinished(written);
    catalog_->Unreserve(snapshot.snapshot_id());
    return status;
  }
  EMBER_LOG(kInfo) << "emberd: VM " << request.vm_id() << ": snapshot " << written.snapshot_id()
                   << " written in " << written.create_duration_us() << " us";
  {
    // Like ember-vmm's chain: a full snapshot starts it afresh, a diff extends it.
    std::lock_guard lock(entry->mu);
    entry->last_snapshot_id = written.snapshot_id();
  }
  return written;
}

namespace {

// `path`'s last component in `dir` (an O_PATH directory fd), for reading: no symlink, never
// blocking, a regular file only.
absl::StatusOr<base::UniqueFd> OpenWrittenFile(int dir, const std::string& path) {
  const std::string name = std::filesystem::path(path).filename().string();
  base::UniqueFd fd(
      ::openat(dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd) return base::ErrnoError("open the snapshot file", path);
  struct stat st {};
  if (::fstat(fd.Get(), &st) != 0) return base::ErrnoError("fstat", path);
  if (!S_ISREG(st.st_mode)) return absl::InternalError(path + " is not a regular file");
  return fd;
}

// Records the MAC of the files just written, in the directory they were written in: `dir_fd`,
// the one handed to the VMM, or (a VMM that wrote none: emberd published a jailed VMM's files
// by name) the directory opened now as that would have been, by the client's rule (`clients`)
// or with no symlink in its last component. Never whatever the names lead to by now: a
// snapshot_dir renamed and replaced by a crafted pair would be sealed as emberd's.
absl::Status RecordSnapshotMac(const SnapshotMac& mac, const v1::Snapshot& snapshot,
                               const std::string& record_dir, bool clients,
                               const base::PathRules* paths, base::UniqueFd dir_fd) {
  if (!dir_fd && clients && paths != nullptr) {
    EMBER_ASSIGN_OR_RETURN(base::PathRules::Place place,
                           paths->OpenPlace("snapshot_dir", snapshot.state_path()));
    dir_fd = std::move(place.dir);
  } else if (!dir_fd) {
    const std::string dir = std::filesystem::path(snapshot.state_path()).parent_path().string();
    dir_fd.Reset(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir_fd) return base::ErrnoError("open", dir);
  }
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd state, OpenWrittenFile(dir_fd.Get(), snapshot.state_path()));
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd memory,
                         OpenWrittenFile(dir_fd.Get(), snapshot.memory_path()));
  return mac.Record(snapshot.snapshot_id(), {state.Get(), snapshot.state_path()},
                    {memory.Get(), snapshot.memory_path()}, record_dir);
}

}  // namespace

absl::Status VmManager::WriteSnapshot(Entry& entry, const v1::Snapshot& snapshot,
                                      const v1::VmConfig& config, v1::Snapshot* written) {
  const std::string dir = std::filesystem::path(snapshot.state_path()).parent_path().string();
  EMBER_RETURN_IF_ERROR(catalog_->Begin(snapshot, config));
  const std::string record_dir = catalog_->RecordDir(snapshot.snapshot_id());
  // Opened now, the fd going with the request: the VMM writes in this very directory.
  absl::StatusOr<base::UniqueFd> dir_fd = view_->OpenSnapshotDir(snapshot, dir != record_dir);
  absl::StatusOr<v1::ControlResponse> response =
      !dir_fd.ok() ? absl::StatusOr<v1::ControlResponse>(dir_fd.status())
                   : supervisor_->Call(entry, SnapshotRequest(snapshot, view_->SnapshotTarget(snapshot)),
                                       Supervisor::Wait::kWhileConnected, dir_fd->Get());
  if (response.ok()) {
    *written = snapshot;
    written->set_create_duration_us(response->snapshot().duration_us());
    absl::Status moved = view_->FinishSnapshot(snapshot, record_dir);
    if (moved.ok()) {
      moved = RecordSnapshotMac(*mac_, snapshot, record_dir, dir != record_dir, options_.paths,
                                std::move(*dir_fd));
    }
    if (moved.ok()) return moved;
    response = moved;
  }
  bool vmm_done;
  {
    // Without an answer ember-vmm may still be writing the files, unless it has ended. An
    // answer (an error one too) comes only once it is done; it is still connected then.
    std::unique_lock lock(entry.mu);
    vmm_done = entry.connected() || Supervisor::WaitForExit(entry, lock, std::chrono::seconds(5));
  }
  if (!vmm_done) {
    EMBER_LOG(kWarn) << "emberd: VM " << entry.vm_id() << ": snapshot " << snapshot.snapshot_id()
                     << " failed while ember-vmm may still write it; its files are left in "
                     << dir;
    return absl::Status(response.status().code(),
                        std::string(response.status().message()) +
                            " (the snapshot's files are left in " + dir +
                            ": ember-vmm may still be writing them)");
  }
  catalog_->RemoveUnfinished(snapshot);
  view_->AbandonSnapshot(snapshot);
  return response.status();
}

std::vector<v1::Snapshot> VmManager::ListSnapshots(const std::string& vm_id) {
  return catalog_->List(vm_id);
}

absl::Status VmManager::DeleteSnapshot(const std::string& snapshot_id) {
  std::vector<SnapshotUser> users;
  absl::StatusOr<v1::Snapshot> taken;
  {
    // Under mu_, so that no clone of the snapshot starts between the look and the take.
    std::lock_guard lock(mu_);
    for (const auto& [id, entry] : vms_) {
      std::lock_guard vm_lock(entry->mu);
      users.push_back(SnapshotUser{id, entry->vm.state(), entry->vm.restored_from(),
                                   entry->last_snapshot_id,
                                   entry->vm.config().machine_config().track_dirty_pages()});
    }
    taken = catalog_->Take(snapshot_id, users);
  }
  if (!taken.ok()) return taken.status();
  return catalog_->Remove(*taken);
}

absl::StatusOr<v1::Snapshot> VmManager::TrustSnapshot(const std::string& snapshot_id) {
  EMBER_ASSIGN_OR_RETURN(v1::Snapshot snapshot, catalog_->Get(snapshot_id));
  // Counted in as a restore, so that DeleteSnapshot does not remove the files being sealed.
  EMBER_RETURN_IF_ERROR(catalog_->BeginRestore(snapshot_id));
  absl::Status sealed = mac_->Seal("snapshot_id", snapshot_id, snapshot.state_path(),
                                   snapshot.memory_path(), catalog_->RecordDir(snapshot_id));
  catalog_->EndRestore(snapshot_id);
  EMBER_RETURN_IF_ERROR(sealed);
  EMBER_LOG(kWarn) << "emberd: snapshot " << snapshot_id
                   << " is trusted on the operator's word (TrustSnapshot): its files as they "
                      "are now restore from here on";
  return snapshot;
}

absl::StatusOr<v1::RestoreResponse> VmManager::Restore(const v1::RestoreRequest& request,
                                                       const std::vector<std::string>& netns_paths) {
  std::uint32_t count = request.count() == 0 ? 1 : request.count();
  if (!request.snapshot_id().empty()) {
    EMBER_RETURN_IF_ERROR(catalog_->Get(request.snapshot_id()).status());
  }
  {
    std::lock_guard lock(mu_);
    for (std::uint32_t i = 0; i < count; ++i) {
      std::string id = request.vm_id_prefix() + "-" + std::to_string(i);
      if (vms_.count(id) != 0) {
        return absl::AlreadyExistsError("vm_id_prefix: a VM \"" + id + "\" already exists");
      }
    }
    if (LiveVms() + count > options_.max_vms) {
      return absl::ResourceExhaustedError("restoring " + std::to_string(count) +
                                          " clones would exceed emberd's limit of " +
                                          std::to_string(options_.max_vms) + " VMs (--max-vms)");
    }
  }
  EMBER_ASSIGN_OR_RETURN(RestorePlan plan, PlanRestore(request, *catalog_));
  // DeleteSnapshot refuses while this restore may still open the snapshot's files.
  if (!plan.snapshot_id.empty()) EMBER_RETURN_IF_ERROR(catalog_->BeginRestore(plan.snapshot_id));
  struct RestoreDone {
    SnapshotCatalog* catalog;
    std::string id;
    ~RestoreDone() {
      if (!id.empty()) catalog->EndRestore(id);
    }
  } restore_done{catalog_.get(), plan.snapshot_id};
  EMBER_RETURN_IF_ERROR(CheckRestoreFiles(request, plan));
  const bool by_path = request.snapshot_id().empty();
  const std::string field = by_path ? "state_path" : "snapshot_id";
  // Opened once: the MAC is checked on, and the clones get, these very files.
  EMBER_RETURN_IF_ERROR(OpenRestoreFiles(field, by_path, options_.paths, &plan));
  // A snapshot emberd made is restored only as emberd wrote it, before anything is spawned.
  if (!plan.record_dir.empty()) {
    EMBER_RETURN_IF_ERROR(mac_->Verify(field, plan.snapshot_id,
                                       {plan.state_file->Get(), plan.state_path},
                                       {plan.memory_file->Get(), plan.memory_path},
                                       plan.record_dir));
  }
  EMBER_RETURN_IF_ERROR(
      view_->PlanRestore(request.snapshot_id().empty() ? "memory_path" : "snapshot_id", &plan));
  EMBER_ASSIGN_OR_RETURN(std::vector<v1::Vm> clones, SpawnClones(request, netns_paths, plan));
  v1::RestoreResponse response;
  for (v1::Vm& clone : clones) *response.add_vms() = std::move(clone);
  return response;
}

absl::StatusOr<std::vector<v1::Vm>> VmManager::SpawnClones(
    const v1::RestoreRequest& request, const std::vector<std::string>& netns_paths,
    RestorePlan& plan) {
  // Without emberd's record of the snapshotted VM's configuration, the clones' records carry
  // only the overrides: ember-vmm itself uses the configuration in the state file.
  v1::VmConfig base_config;
  bool config_known = !plan.record_dir.empty() &&
                      ReadMessageJson(plan.record_dir + "/vm_config.json", &base_config).ok();
  if (!config_known) base_config.Clear();
  std::uint32_t count = request.count() == 0 ? 1 : request.count();
  std::vector<v1::Vm> clones;
  auto rollback = [&](absl::Status status) {
    for (const v1::Vm& clone : clones) (void)Delete(clone.vm_id(), /*force=*/true);
    return status;
  };
  for (std::uint32_t i = 0; i < count; ++i) {
    plan.overrides = i < static_cast<std::uint32_t>(request.overrides_size())
                         ? request.overrides(static_cast<int>(i))
                         : v1::RestoreOverrides();
    plan.netns_path = i < netns_paths.size() ? netns_paths[i] : "";
    const std::string where = "overrides[" + std::to_string(i) + "]";
    v1::VmConfig config = base_config;
    absl::Status status = view_->CheckOverrides(where, plan.overrides);
    if (status.ok()) status = ApplyOverrides(plan.overrides, where, config_known, &config);
    if (!status.ok()) return rollback(status);
    absl::StatusOr<v1::Vm> vm =
        SpawnVm(request.vm_id_prefix() + "-" + std::to_string(i), config, &plan);
    if (!vm.ok()) return rollback(vm.status());
    clones.push_back(*vm);
  }
  if (!request.resume()) return clones;
  for (v1::Vm& clone : clones) {
    absl::StatusOr<v1::Vm> resumed = Resume(clone.vm_id());
    if (!resumed.ok()) return rollback(resumed.status());
    clone = *resumed;
  }
  return clones;
}

}  // namespace ember::emberd
