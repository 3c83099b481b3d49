// VmManager's recovery after an emberd restart: the VMs' records loaded, each live VMM
// re-attached, and the VM directories an earlier emberd left without a record removed
// (vm_manager.h).
#include "vmm/emberd/vm_manager.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/emberd/store.h"
#include "vmm/emberd/unix_socket.h"
#include "vmm/emberd/vmm_file.h"

namespace ember::emberd {

namespace {

// More than RecordedExit reads of an exit record's first line.
constexpr std::size_t kMaxExitRecordBytes = 4096;

}  // namespace

absl::StatusOr<std::vector<std::shared_ptr<VmManager::Entry>>> VmManager::LoadVms(
    std::vector<std::string>* leftovers) {
  std::string vms_dir = options_.state_dir + "/vms";
  std::error_code error;
  std::vector<std::shared_ptr<Entry>> running;
  for (auto it = std::filesystem::directory_iterator(vms_dir, error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    std::string dir = it->path().string();
    if (::access((dir + "/vm.json").c_str(), F_OK) != 0 && errno == ENOENT) {
      leftovers->push_back(it->path().filename().string());
      continue;
    }
    v1::Vm vm;
    if (auto status = ReadMessageJson(dir + "/vm.json", &vm); !status.ok()) {
      EMBER_LOG(kWarn) << "emberd: skipping " << dir << ": " << status.message();
      continue;
    }
    const std::string vm_id = vm.vm_id();
    auto entry = std::make_shared<Entry>(std::move(vm), VmDir(vm_id), events_);
    view_->LoadVm(entry->vm_id());
    {
      std::lock_guard lock(mu_);
      vms_[entry->vm_id()] = entry;
    }
    if (entry->vm.state() != v1::Vm::STOPPED) running.push_back(entry);
  }
  if (error) return absl::InternalError("cannot list " + vms_dir + ": " + error.message());
  return running;
}

// A VM directory an earlier emberd left without a record (ReserveLeftover), on its way out
// (RemoveLeftover).
struct VmManager::Leftover {
  std::shared_ptr<Entry> entry;  // deleted: its id taken, found by no call
  bool attached = false;         // its VMM holds the control socket, and is connected
  pid_t peer_pid = 0;            // the socket's peer (SO_PEERCRED), for the log
  base::UniqueFd peer_pidfd;     // its pidfd, opened at connect
};

VmManager::Leftover VmManager::ReserveLeftover(const std::string& vm_id) {
  // An earlier emberd ended between making this VM's directory and recording the VM (Create,
  // Restore), or between removing its record and the rest (Delete): nobody was told of a VM
  // here. Its ember-vmm, if one was started, still holds the control socket's listener and
  // ends when told to stop; then its files go.
  view_->LoadVm(vm_id);
  v1::Vm record;
  record.set_vm_id(vm_id);
  record.set_state(v1::Vm::STOPPED);  // not counted against --max-vms
  Leftover leftover;
  leftover.entry = std::make_shared<Entry>(std::move(record), VmDir(vm_id), events_);
  leftover.entry->creating = true;  // no events
  leftover.entry->deleted = true;   // no record; a Create of the id is refused until it is gone
  {
    std::lock_guard lock(mu_);
    vms_[vm_id] = leftover.entry;
  }
  absl::StatusOr<base::UniqueFd> control = ConnectUnix(VmDir(vm_id) + "/control.sock");
  if (!control.ok()) return leftover;
  // No record names its pid: the socket's peer does (in emberd's pid namespace). Its pidfd
  // is opened now: the pid, kept until the stop has timed out, could name another process by
  // then.
  ucred peer{};
  socklen_t peer_size = sizeof(peer);
  if (::getsockopt(control->Get(), SOL_SOCKET, SO_PEERCRED, &peer, &peer_size) == 0 &&
      peer.pid > 0) {
    leftover.peer_pid = peer.pid;
    leftover.peer_pidfd = OpenPidfd(peer.pid).value_or(base::UniqueFd());
  }
  leftover.attached =
      supervisor_->Attach(leftover.entry, std::move(*control), 0, /*child=*/false).ok();
  return leftover;
}

void VmManager::RemoveLeftover(Leftover& leftover) {
  const std::shared_ptr<Entry>& entry = leftover.entry;
  if (leftover.attached) {
    v1::ControlRequest stop;
    stop.mutable_stop()->set_reason("emberd ended before it recorded this VM");
    absl::Status stopped = supervisor_->Call(*entry, stop).status();
    std::unique_lock lock(entry->mu);
    // The VMM's exit closes the connection; one that did not even answer the stop within the
    // request timeout is not waited for any longer.
    const std::chrono::milliseconds wait =
        stopped.ok() ? options_.create_timeout : std::chrono::milliseconds(0);
    if (!entry->cv.wait_for(lock, wait, [&] { return !entry->connected(); })) {
      EMBER_LOG(kWarn) << "emberd: the unrecorded ember-vmm of " << entry->vm_id() << " (pid "
                       << leftover.peer_pid << ") did not end when told to stop ("
                       << stopped.message() << "); killing it";
      if (leftover.peer_pidfd) KillUnanswering(entry, std::move(leftover.peer_pidfd), lock);
    }
    supervisor_->Detach(*entry);
  }
  std::lock_guard op(entry->op_mu);
  // As a Delete's: its id stays taken until its files are gone (a Delete finishes the job).
  if (absl::Status removed = RemoveFiles(entry); !removed.ok()) {
    EMBER_LOG(kWarn) << "emberd: " << removed.message();
    return;
  }
  EMBER_LOG(kInfo) << "emberd: removed " << VmDir(entry->vm_id())
                   << ", which an earlier emberd left without a record";
}

void VmManager::KillUnanswering(const std::shared_ptr<Entry>& entry, base::UniqueFd pidfd,
                                std::unique_lock<std::mutex>& lock) {
  lock.unlock();
  supervisor_->WatchProcess(entry, std::move(pidfd));
  lock.lock();
  entry->Kill();
  (void)Supervisor::WaitForExit(*entry, lock, std::chrono::seconds(5));
}

void VmManager::Reattach(const std::shared_ptr<Entry>& entry) {
  // A live ember-vmm still holds its listening control socket and answers HELLO.
  const std::string& id = entry->vm_id();
  absl::StatusOr<base::UniqueFd> control = ConnectUnix(VmDir(id) + "/control.sock");
  absl::Status status = control.status();
  // Opened at connect, for KillUnanswering: the recorded pid, kept until the HELLO has timed
  // out, could name another process by then.
  base::UniqueFd recorded_pidfd;
  if (status.ok() && entry->vm.pid() > 0) {
    recorded_pidfd = OpenPidfd(entry->vm.pid()).value_or(base::UniqueFd());
  }
  if (status.ok()) status = supervisor_->Attach(entry, std::move(*control), 0, /*child=*/false);
  const bool connected = status.ok();
  std::unique_lock lock(entry->mu);
  if (status.ok() &&
      entry->cv.wait_for(lock, options_.create_timeout, [&] { return entry->hello(); })) {
    const pid_t pid = entry->vm.pid();
    lock.unlock();
    status = supervisor_->WatchProcess(entry, pid);
    lock.lock();
    if (status.ok()) {
      EMBER_LOG(kInfo) << "emberd: re-attached VM " << id << " (pid " << pid << ", "
                       << StateName(entry->vm.state()) << ")";
      return;
    }
  }
  supervisor_->Detach(*entry);
  if (connected && recorded_pidfd) {
    // It still holds its listener but never answered: a VM nobody can drive. Ended, so that
    // no ember-vmm runs that emberd does not know.
    const pid_t pid = entry->vm.pid();
    KillUnanswering(entry, std::move(recorded_pidfd), lock);
    EMBER_LOG(kWarn) << "emberd: VM " << id << " (pid " << pid
                     << ") did not answer after the restart; killed";
  }
  // The VMM's words, so read as any file it writes, and no more than a line's worth.
  absl::StatusOr<base::UniqueFd> fd = view_->OpenVmmFile(id, "exit");
  absl::StatusOr<std::string> record =
      fd.ok() ? ReadAtMost(fd->Get(), kMaxExitRecordBytes) : fd.status();
  *entry->vm.mutable_exit() = RecordedExit(record);
  entry->vm.set_pid(0);
  entry->SetState(v1::Vm::STOPPED);
  EMBER_LOG(kInfo) << "emberd: VM " << id << " is gone: marked STOPPED";
}

absl::Status VmManager::Recover() {
  std::vector<std::string> leftover_ids;
  EMBER_ASSIGN_OR_RETURN(std::vector<std::shared_ptr<Entry>> running, LoadVms(&leftover_ids));
  // Connected now, before emberd's seccomp filter; stopped and removed in the background, so
  // that a VMM that does not answer holds up no serving.
  std::vector<Leftover> leftovers;
  for (const std::string& vm_id : leftover_ids) leftovers.push_back(ReserveLeftover(vm_id));
  catalog_->Load();
  {
    std::lock_guard lock(mu_);
    for (auto& [vm_id, entry] : vms_) {
      std::lock_guard vm_lock(entry->mu);
      entry->last_snapshot_id = catalog_->NextDiffBase(vm_id, entry->vm.created_unix_ms(),
                                                       entry->vm.restored_from());
    }
  }
  for (auto& entry : running) Reattach(entry);
  if (!leftovers.empty()) {
    leftover_remover_ = std::thread([this, leftovers = std::move(leftovers)]() mutable {
      for (Leftover& leftover : leftovers) RemoveLeftover(leftover);
    });
  }
  return absl::OkStatus();
}

}  // namespace ember::emberd
