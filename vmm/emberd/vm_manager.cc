#include "vmm/emberd/vm_manager.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

#include "vmm/base/drive_file.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/emberd/control_requests.h"
#include "vmm/emberd/self_metrics.h"
#include "vmm/emberd/store.h"
#include "vmm/emberd/unix_socket.h"

namespace ember::emberd {

namespace {

std::string GenerateId() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lock(mu);
  char buf[20];
  std::snprintf(buf, sizeof(buf), "vm-%012llx",
                static_cast<unsigned long long>(rng() & 0xffffffffffffULL));
  return buf;
}

absl::Status StillCreating(const std::string& vm_id) {
  return absl::FailedPreconditionError("VM \"" + vm_id + "\" is still being created");
}

}  // namespace

absl::StatusOr<std::unique_ptr<VmManager>> VmManager::Create(
    ManagerOptions options, std::unique_ptr<VmmLauncher> launcher) {
  std::unique_ptr<VmManager> manager(new VmManager(std::move(options), std::move(launcher)));
  const ManagerOptions& o = manager->options_;
  for (const std::string& dir : {o.state_dir, o.state_dir + "/vms"}) {
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return base::ErrnoError("mkdir", dir);
  }
  EMBER_ASSIGN_OR_RETURN(manager->catalog_, SnapshotCatalog::Create(o.state_dir));
  EMBER_ASSIGN_OR_RETURN(SnapshotMac mac, SnapshotMac::LoadOrCreateKey(o.state_dir));
  manager->mac_.emplace(std::move(mac));
  manager->view_ = o.jail_dir.empty()
                       ? MakeDirectView(o.state_dir + "/vms", o.paths)
                       : MakeJailedView(o.state_dir + "/vms", o.jail_dir, o.jail_ids, o.paths,
                                        o.jail_cgroups, &manager->events_);
  EMBER_ASSIGN_OR_RETURN(manager->supervisor_, Supervisor::Create(o.request_timeout));
  return manager;
}

VmManager::~VmManager() {
  if (leftover_remover_.joinable()) leftover_remover_.join();
  supervisor_.reset();
}

std::string VmManager::VmDir(const std::string& vm_id) const {
  return options_.state_dir + "/vms/" + vm_id;
}

absl::StatusOr<std::shared_ptr<VmManager::Entry>> VmManager::Find(const std::string& vm_id) {
  std::lock_guard lock(mu_);
  auto it = vms_.find(vm_id);
  if (it != vms_.end()) {
    std::lock_guard vm_lock(it->second->mu);
    if (!it->second->deleted) return it->second;
  }
  return absl::NotFoundError("vm_id: no VM \"" + vm_id + "\"");
}

void VmManager::Forget(const std::shared_ptr<Entry>& entry) {
  std::lock_guard lock(mu_);
  auto it = vms_.find(entry->vm_id());
  if (it != vms_.end() && it->second == entry) vms_.erase(it);
}

std::size_t VmManager::LiveVms() {
  std::size_t live = 0;
  for (auto& [id, entry] : vms_) {
    std::lock_guard lock(entry->mu);
    if (entry->vm.state() != v1::Vm::STOPPED) ++live;
  }
  return live;
}

absl::StatusOr<v1::Vm> VmManager::CreateVm(std::string vm_id, const v1::VmConfig& config,
                                           const std::string& netns_path) {
  return SpawnVm(std::move(vm_id), config, nullptr, netns_path);
}

absl::StatusOr<std::shared_ptr<VmManager::Entry>> VmManager::AddEntry(
    std::string vm_id, const v1::VmConfig& config, const RestorePlan* restore) {
  std::lock_guard lock(mu_);
  if (vm_id.empty()) {
    do vm_id = GenerateId();
    while (vms_.count(vm_id) != 0);
  }
  if (auto it = vms_.find(vm_id); it != vms_.end()) {
    std::lock_guard vm_lock(it->second->mu);
    return absl::AlreadyExistsError("vm_id: a VM \"" + vm_id + "\" " +
                                    (it->second->deleted ? "is still being deleted; try again"
                                                         : "already exists"));
  }
  if (LiveVms() >= options_.max_vms) {
    return absl::ResourceExhaustedError("emberd runs its limit of " +
                                        std::to_string(options_.max_vms) +
                                        " VMs (--max-vms); stop or delete one first");
  }
  v1::Vm vm;
  vm.set_vm_id(vm_id);
  vm.set_state(v1::Vm::CREATED);
  *vm.mutable_config() = config;
  vm.set_created_unix_ms(NowUnixMs());
  vm.set_state_dir(VmDir(vm_id));
  if (restore != nullptr) vm.set_restored_from(restore->restored_from);
  auto entry = std::make_shared<Entry>(std::move(vm), VmDir(vm_id), events_);
  if (restore != nullptr) entry->last_snapshot_id = restore->snapshot_id;
  entry->creating = true;
  vms_[vm_id] = entry;
  return entry;
}

absl::Status VmManager::Abandon(const std::shared_ptr<Entry>& entry, absl::Status status) {
  {
    // Its files go only once its VMM has (a live one would write into the removed directory
    // and keep its cgroup busy), and its id is free again only once they have: a Create of
    // the same id meanwhile is ALREADY_EXISTS, never a VM whose directory this removes.
    std::unique_lock lock(entry->mu);
    entry->deleted = true;
    entry->Kill();
    if (!entry->exited() && entry->vm.pid() != 0 &&
        !Supervisor::WaitForExit(*entry, lock, std::chrono::seconds(5))) {
      EMBER_LOG(kWarn) << "emberd: VM " << entry->vm_id()
                       << ": its ember-vmm did not end within 5 s of SIGKILL";
    }
  }
  // As a Delete's: whatever stays keeps the id taken until a Delete removes it.
  if (absl::Status removed = RemoveFiles(entry); !removed.ok()) {
    return absl::Status(status.code(),
                        std::string(status.message()) + "; and " + std::string(removed.message()));
  }
  return status;
}

absl::StatusOr<v1::Vm> VmManager::SpawnVm(std::string vm_id, const v1::VmConfig& config,
                                          const RestorePlan* restore,
                                          const std::string& netns_path) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry,
                         AddEntry(std::move(vm_id), config, restore));
  std::lock_guard op(entry->op_mu);
  if (auto status = view_->CheckVmId(entry->vm_id()); !status.ok()) {
    return Abandon(entry, status);
  }
  if (auto status = Launch(entry, config, restore,
                           restore != nullptr ? restore->netns_path : netns_path);
      !status.ok()) {
    return Abandon(entry, status);
  }
  if (auto status = AwaitBuilt(*entry, restore != nullptr); !status.ok()) {
    return Abandon(entry, status);
  }
  v1::Vm vm;
  {
    std::lock_guard lock(entry->mu);
    entry->creating = false;
    vm = entry->vm;
  }
  v1::Event event;
  event.set_kind(v1::Event::STATE);
  event.set_state(vm.state());  // CREATED, or PAUSED for a restored VM
  event.set_vm_id(vm.vm_id());
  event.set_unix_ms(NowUnixMs());
  events_.Publish(event);
  EMBER_LOG(kInfo) << "emberd: VM " << vm.vm_id()
                   << (restore != nullptr ? " restored" : " created") << " (pid " << vm.pid()
                   << ")";
  return vm;
}

absl::Status VmManager::Launch(const std::shared_ptr<Entry>& entry, const v1::VmConfig& config,
                               const RestorePlan* restore, const std::string& netns_path) {
  const std::string dir = VmDir(entry->vm_id());
  if (::mkdir(dir.c_str(), 0700) != 0) return base::ErrnoError("mkdir", dir);
  // config.json is the readable record; ember-vmm reads the binary config.pb, which spares it
  // running ember-config (the JSON parser) on every start.
  EMBER_ASSIGN_OR_RETURN(std::string json, ToUserJson(config));
  EMBER_RETURN_IF_ERROR(WriteFileAtomic(dir + "/config.json", json));
  EMBER_RETURN_IF_ERROR(WriteFileAtomic(dir + "/config.pb", config.SerializeAsString()));
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd listener, ListenUnix(dir + "/control.sock"));
  // Connect before ember-vmm exists: the connection waits in the backlog, so even a VMM that
  // fails at once (a bad kernel) is seen through the channel rather than a refused connect.
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd conn, ConnectUnix(dir + "/control.sock"));
  base::UniqueFd log(::open((dir + "/vmm.log").c_str(),
                            O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!log) return base::ErrnoError("open", dir + "/vmm.log");
  LaunchSpec spec;
  spec.vm_id = entry->vm_id();
  spec.vm_dir = dir;
  EMBER_RETURN_IF_ERROR(view_->PrepareLaunch(config, restore, &spec));
  spec.netns_path = netns_path;
  spec.control_listen_fd = listener.Get();
  spec.stderr_fd = log.Get();
  EMBER_ASSIGN_OR_RETURN(pid_t pid, launcher_->Launch(spec));
  listener.Reset();  // ember-vmm holds the only listening copy now
  if (auto status = supervisor_->Attach(entry, std::move(conn), pid, /*child=*/true);
      !status.ok()) {
    ::kill(pid, SIGKILL);
    return status;
  }
  std::lock_guard lock(entry->mu);
  entry->vm.set_pid(pid);
  // Without its record a restarted emberd would not know the VM (Recover stops the VMM of a
  // directory without one): no VM without it.
  return entry->Persist();
}

absl::Status VmManager::AwaitBuilt(Entry& entry, bool restore) {
  std::unique_lock lock(entry.mu);
  auto built_or_ended = [&] { return entry.hello() || entry.exited(); };
  if (restore) {
    // A restore's time grows with the snapshot: wait while its VMM lives (its exit, or Stop,
    // ends the wait).
    entry.cv.wait(lock, built_or_ended);
  } else if (!entry.cv.wait_for(lock, options_.create_timeout, built_or_ended)) {
    return absl::DeadlineExceededError("VM \"" + entry.vm_id() +
                                       "\": ember-vmm did not finish building the VM in time");
  }
  if (entry.hello()) return absl::OkStatus();
  if (entry.build_failure()) {
    return BuildFailureStatus(entry.vm_id(), restore, *entry.build_failure());
  }
  return absl::InternalError("VM \"" + entry.vm_id() + "\": " + entry.vm.exit().reason());
}

absl::StatusOr<v1::Vm> VmManager::SimpleOp(const std::string& vm_id, v1::Vm::State from,
                                           const char* verb, const v1::ControlRequest& request) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  std::lock_guard op(entry->op_mu);
  {
    std::lock_guard lock(entry->mu);
    if (entry->creating) return StillCreating(vm_id);
    if (entry->vm.state() != from) {
      return absl::FailedPreconditionError(std::string("cannot ") + verb + " VM \"" + vm_id +
                                           "\": it is " + StateName(entry->vm.state()) +
                                           ", not " + StateName(from));
    }
  }
  EMBER_ASSIGN_OR_RETURN(v1::ControlResponse response, supervisor_->Call(*entry, request));
  std::lock_guard lock(entry->mu);
  entry->ApplyVmmState(response.status().state());
  return entry->vm;
}

absl::StatusOr<v1::Vm> VmManager::Start(const std::string& vm_id, std::uint64_t request_us) {
  v1::ControlRequest request;
  request.mutable_start()->set_start_time_us(request_us);
  return SimpleOp(vm_id, v1::Vm::CREATED, "start", request);
}

absl::StatusOr<v1::Vm> VmManager::Pause(const std::string& vm_id) {
  v1::ControlRequest request;
  request.mutable_pause();
  return SimpleOp(vm_id, v1::Vm::RUNNING, "pause", request);
}

absl::StatusOr<v1::Vm> VmManager::Resume(const std::string& vm_id) {
  v1::ControlRequest request;
  request.mutable_resume();
  return SimpleOp(vm_id, v1::Vm::PAUSED, "resume", request);
}

absl::StatusOr<v1::Vm> VmManager::Stop(const std::string& vm_id,
                                       std::chrono::milliseconds timeout) {
  // `timeout` bounds the whole stop, the VMM's answer included: a VMM that never answers costs
  // the caller (the Functions' single discard thread among them) `timeout`, not the request
  // timeout on top of it.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto left = [&] {
    return std::max(std::chrono::milliseconds(0),
                    std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now()));
  };
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  std::unique_lock op(entry->op_mu, std::defer_lock);
  if (!op.try_lock_for(timeout)) {
    // A snapshot or a restore has kept the VMM busy for longer than the stop may take: end it
    // as a VMM that does not answer the stop is ended. That call then fails and gives op_mu up.
    std::lock_guard lock(entry->mu);
    EMBER_LOG(kWarn) << "emberd: VM " << vm_id << ": still busy with a snapshot or restore "
                     << "after " << timeout.count() << " ms; killing it";
    entry->Kill();
  }
  if (!op.owns_lock()) op.lock();
  {
    std::lock_guard lock(entry->mu);
    if (entry->vm.state() == v1::Vm::STOPPED) return entry->vm;
  }
  v1::ControlRequest request;
  request.mutable_stop()->set_reason("stopped through the API");
  absl::StatusOr<v1::ControlResponse> response = supervisor_->CallWithin(*entry, request, left());
  if (!response.ok()) {
    EMBER_LOG(kWarn) << "emberd: VM " << vm_id << ": " << response.status().message()
                     << "; killing it";
  }
  std::unique_lock lock(entry->mu);
  if (!response.ok() || !Supervisor::WaitForExit(*entry, lock, left())) {
    entry->Kill();
    if (!Supervisor::WaitForExit(*entry, lock, std::chrono::seconds(5))) {
      return absl::UnavailableError("VM \"" + vm_id + "\": ember-vmm did not exit after SIGKILL");
    }
  }
  return entry->vm;
}

absl::Status VmManager::Delete(const std::string& vm_id, bool force) {
  if (std::shared_ptr<Entry> unfinished = UnfinishedDelete(vm_id)) {
    std::lock_guard op(unfinished->op_mu);
    {
      std::lock_guard lock(unfinished->mu);
      // Another retry came first.
      if (!unfinished->delete_unfinished) {
        return absl::NotFoundError("vm_id: no VM \"" + vm_id + "\"");
      }
      unfinished->delete_unfinished = false;
    }
    return RemoveFiles(unfinished);
  }
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  {
    std::lock_guard lock(entry->mu);
    if (entry->creating) return StillCreating(vm_id);
    if (entry->vm.state() != v1::Vm::STOPPED && !force) {
      return absl::FailedPreconditionError("cannot delete VM \"" + vm_id + "\": it is " +
                                           StateName(entry->vm.state()) +
                                           "; stop it first or set force");
    }
  }
  if (force) EMBER_RETURN_IF_ERROR(Stop(vm_id, std::chrono::milliseconds(2000)).status());
  std::lock_guard op(entry->op_mu);
  {
    std::lock_guard lock(entry->mu);
    // Another Delete came first.
    if (entry->deleted) return absl::NotFoundError("vm_id: no VM \"" + vm_id + "\"");
    entry->deleted = true;
  }
  return RemoveFiles(entry);
}

std::shared_ptr<VmManager::Entry> VmManager::UnfinishedDelete(const std::string& vm_id) {
  std::lock_guard lock(mu_);
  auto it = vms_.find(vm_id);
  if (it == vms_.end()) return nullptr;
  std::lock_guard vm_lock(it->second->mu);
  return it->second->delete_unfinished ? it->second : nullptr;
}

absl::Status VmManager::RemoveFiles(const std::shared_ptr<Entry>& entry) {
  // The entry stays in vms_ (Find skips it) until the files are gone, so that a Create of the
  // same id cannot make a directory this is removing. The record goes first: an emberd killed
  // in between finds a directory without one and removes the rest (RemoveLeftover).
  const std::string& vm_id = entry->vm_id();
  const std::string dir = VmDir(vm_id);
  absl::Status status;
  if (::unlink((dir + "/vm.json").c_str()) != 0 && errno != ENOENT) {
    status = base::ErrnoError("unlink", dir + "/vm.json");
  }
  if (status.ok()) status = view_->RemoveVm(vm_id);
  if (status.ok()) status = RemoveTree(dir);
  if (!status.ok()) {
    // Still not free: a Create of the id would find the directory there (and remove it as its
    // own); a retried Delete finishes the job. An emberd restarted meanwhile finds the VM again
    // (vm.json kept) or removes the rest (RemoveLeftover).
    std::lock_guard lock(entry->mu);
    entry->delete_unfinished = true;
    return absl::Status(status.code(), "VM \"" + vm_id + "\" is deleted but not all of its "
                                       "files could be removed (Delete again to finish): " +
                                       std::string(status.message()));
  }
  {
    // Only now: a watcher told of the deletion finds the id free (no event for a VM whose
    // creation failed: nobody was told of it).
    std::lock_guard lock(entry->mu);
    v1::Event event;
    event.set_kind(v1::Event::DELETED);
    entry->Publish(event);
  }
  Forget(entry);
  EMBER_LOG(kInfo) << "emberd: VM " << vm_id << " deleted";
  return absl::OkStatus();
}

absl::StatusOr<v1::Vm> VmManager::Get(const std::string& vm_id) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  std::lock_guard lock(entry->mu);
  if (entry->creating) {
    return absl::NotFoundError("vm_id: VM \"" + vm_id + "\" is still being created");
  }
  return entry->vm;
}

std::vector<v1::Vm> VmManager::List() {
  std::vector<std::shared_ptr<Entry>> entries;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, entry] : vms_) entries.push_back(entry);
  }
  std::vector<v1::Vm> vms;
  for (auto& entry : entries) {
    std::lock_guard lock(entry->mu);
    if (!entry->creating && !entry->deleted) vms.push_back(entry->vm);
  }
  return vms;
}

absl::StatusOr<std::string> VmManager::VmMetrics(const std::string& vm_id) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  {
    std::lock_guard lock(entry->mu);
    if (entry->vm.state() == v1::Vm::STOPPED) {
      return absl::FailedPreconditionError("VM \"" + vm_id + "\" is STOPPED: no metrics");
    }
  }
  v1::ControlRequest request;
  request.mutable_get_metrics();
  EMBER_ASSIGN_OR_RETURN(v1::ControlResponse response, supervisor_->Call(*entry, request));
  return response.metrics_json();
}

std::string VmManager::OwnMetrics() {
  std::size_t total = 0;
  std::size_t live = 0;
  {
    std::lock_guard lock(mu_);
    total = vms_.size();
    live = LiveVms();
  }
  return SelfMetricsJson(NowUnixMs(), total, live, events_.watchers());
}

absl::Status VmManager::UpdateRateLimits(const v1::UpdateRateLimitsRequest& request) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(request.vm_id()));
  v1::ControlRequest control;
  {
    std::lock_guard lock(entry->mu);
    EMBER_ASSIGN_OR_RETURN(*control.mutable_update_rate_limits(),
                           RateLimitUpdate(request, entry->vm.config()));
    if (entry->vm.state() != v1::Vm::RUNNING && entry->vm.state() != v1::Vm::PAUSED) {
      return absl::FailedPreconditionError("cannot update rate limits of VM \"" +
                                           request.vm_id() + "\": it is " +
                                           StateName(entry->vm.state()));
    }
  }
  return supervisor_->Call(*entry, control).status();
}

absl::StatusOr<v1::Vm> VmManager::UpdateDrive(const v1::UpdateDriveRequest& request) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(request.vm_id()));
  // One swap at a time per VM: two at once could reach the VMM in one order and the record in
  // the other, which would then name a file the drive no longer uses.
  std::lock_guard op(entry->op_mu);
  v1::Drive drive;
  {
    std::lock_guard lock(entry->mu);
    if (entry->creating) return StillCreating(request.vm_id());
    auto& drives = entry->vm.config().drives();
    auto it = std::find_if(drives.begin(), drives.end(), [&](const v1::Drive& candidate) {
      return candidate.drive_id() == request.drive_id();
    });
    if (it == drives.end()) {
      return absl::NotFoundError("drive_id: VM \"" + request.vm_id() + "\" has no drive \"" +
                                 request.drive_id() + "\"");
    }
    drive = *it;
    if (entry->vm.state() != v1::Vm::RUNNING && entry->vm.state() != v1::Vm::PAUSED) {
      return absl::FailedPreconditionError("cannot swap a drive of VM \"" + request.vm_id() +
                                           "\": it is " + StateName(entry->vm.state()));
    }
  }
  // The rule a Create's drive passes, on the very file that passed it (an O_PATH fd, reopened
  // through /proc for the access the drive needs: a symlink swapped in afterwards leads nowhere).
  std::string open_path = request.path_on_host();
  base::UniqueFd checked;
  if (options_.paths != nullptr) {
    EMBER_ASSIGN_OR_RETURN(checked, options_.paths->OpenFile("path_on_host", request.path_on_host()));
    open_path = "/proc/self/fd/" + std::to_string(checked.Get());
  }
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd file,
                         base::OpenDriveFile(open_path, drive.is_read_only(), drive.direct_io(),
                                             "path_on_host"));
  EMBER_RETURN_IF_ERROR(view_->CheckDriveFile(request.vm_id(), file.Get(), drive.is_read_only()));
  v1::ControlRequest control;
  control.mutable_update_drive()->set_drive_id(request.drive_id());
  control.mutable_update_drive()->set_path(request.path_on_host());
  EMBER_RETURN_IF_ERROR(
      supervisor_->Call(*entry, control, Supervisor::Wait::kRequestTimeout, file.Get()).status());
  std::lock_guard lock(entry->mu);
  for (v1::Drive& recorded : *entry->vm.mutable_config()->mutable_drives()) {
    if (recorded.drive_id() == request.drive_id()) recorded.set_path_on_host(request.path_on_host());
  }
  // Not rolled back: a swap back could fail as well. The record in memory names the file the
  // drive uses; the caller learns that the one on disk does not.
  if (absl::Status persisted = entry->Persist(); !persisted.ok()) {
    return absl::Status(persisted.code(),
                        "drive \"" + request.drive_id() + "\" of VM \"" + request.vm_id() +
                            "\" now uses " + request.path_on_host() +
                            ", but emberd could not record the swap (an emberd restarted "
                            "before the next record would name the old file): " +
                            std::string(persisted.message()));
  }
  return entry->vm;
}

absl::StatusOr<bool> VmManager::ConsoleEnded(const std::string& vm_id) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  std::lock_guard lock(entry->mu);
  return entry->vm.state() == v1::Vm::STOPPED;
}

absl::StatusOr<base::UniqueFd> VmManager::OpenConsole(const std::string& vm_id) {
  EMBER_RETURN_IF_ERROR(Find(vm_id).status());
  return view_->OpenVmmFile(vm_id, "console.log");
}

}  // namespace ember::emberd
