#include "vmm/emberd/vm_manager.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <tuple>

#include "vmm/base/atomic_file.h"
#include "vmm/base/clock.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/emberd/store.h"
#include "vmm/emberd/unix_socket.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace ember::emberd {

namespace {

std::int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

base::UniqueFd PidfdOpen(pid_t pid) {
  return base::UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
}

void PidfdKill(int pidfd, int sig) {
  ::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0);
}

const char* StateName(v1::Vm::State state) {
  switch (state) {
    case v1::Vm::CREATED: return "CREATED";
    case v1::Vm::RUNNING: return "RUNNING";
    case v1::Vm::PAUSED: return "PAUSED";
    case v1::Vm::STOPPED: return "STOPPED";
    default: return "UNSPECIFIED";
  }
}

// The last "error:" line ember-vmm wrote to its log: why it refused to build the VM.
std::string LastError(const std::string& log_path) {
  std::ifstream in(log_path);
  std::string line;
  std::string last;
  std::string any;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    any = line;
    if (line.find("error") != std::string::npos) last = line;
  }
  std::string found = last.empty() ? any : last;
  constexpr std::string_view kPrefix = "ember-vmm: error: ";
  if (found.rfind(kPrefix, 0) == 0) found = found.substr(kPrefix.size());
  return found;
}

// Applies a clone's overrides to the recorded configuration of its snapshot. With `check`
// (the configuration is known), an override naming a drive or interface the snapshot does not
// have is INVALID_ARGUMENT; otherwise ember-vmm finds that out.
absl::Status ApplyOverrides(const v1::RestoreOverrides& overrides, const std::string& where,
                            bool check, v1::VmConfig* config) {
  for (const auto& [id, path] : overrides.drive_path_on_host()) {
    if (path.empty() || path[0] != '/') {
      return absl::InvalidArgumentError(where + ".drive_path_on_host[" + id +
                                        "]: must be an absolute path");
    }
    bool found = false;
    for (v1::Drive& drive : *config->mutable_drives()) {
      if (drive.drive_id() == id) {
        drive.set_path_on_host(path);
        found = true;
      }
    }
    if (!found && check) {
      return absl::InvalidArgumentError(where + ".drive_path_on_host: the snapshot has no drive \"" +
                                        id + "\"");
    }
  }
  auto iface = [&](const std::string& id, const char* field) -> absl::StatusOr<v1::NetworkInterface*> {
    for (v1::NetworkInterface& n : *config->mutable_network_interfaces()) {
      if (n.iface_id() == id) return &n;
    }
    if (check) {
      return absl::InvalidArgumentError(where + "." + field +
                                        ": the snapshot has no network interface \"" + id + "\"");
    }
    return nullptr;
  };
  for (const auto& [id, tap] : overrides.iface_host_dev_name()) {
    EMBER_ASSIGN_OR_RETURN(v1::NetworkInterface * n, iface(id, "iface_host_dev_name"));
    if (n != nullptr) n->set_host_dev_name(tap);
  }
  for (const auto& [id, mac] : overrides.iface_guest_mac()) {
    EMBER_ASSIGN_OR_RETURN(v1::NetworkInterface * n, iface(id, "iface_guest_mac"));
    if (n != nullptr) n->set_guest_mac(mac);
  }
  if (!overrides.vsock_uds_path().empty()) {
    if (check && !config->has_vsock()) {
      return absl::InvalidArgumentError(where + ".vsock_uds_path: the snapshot has no vsock");
    }
    config->mutable_vsock()->set_uds_path(overrides.vsock_uds_path());
  }
  return absl::OkStatus();
}

// A jailed VM's diff chain (VmManager::JailChain), one "NAME HOST_PATH" line per memory file:
// in the VM's directory the chain its ember-vmm holds now, in a jailed snapshot's record
// directory the bases its state file names (none for a full snapshot). Its presence marks a
// snapshot a jailed ember-vmm took.
constexpr char kJailChainFile[] = "jail-chain";
constexpr char kJailBasesFile[] = "jail-bases";

absl::Status WriteJailChain(const std::string& path,
                            const std::vector<std::pair<std::string, std::string>>& chain) {
  std::string text;
  for (const auto& [name, host] : chain) {
    if (host.find('\n') != std::string::npos) {
      return absl::InvalidArgumentError("snapshot_dir: " + host + " has a newline");
    }
    text += name + " " + host + "\n";
  }
  return WriteFileAtomic(path, text);
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ReadJailChain(
    const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::vector<std::pair<std::string, std::string>> chain;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    std::size_t space = line.find(' ');
    // A name is a plain file name in a jail's root (JailFile::jail_name).
    if (space == 0 || space == std::string::npos ||
        line.substr(0, space).find('/') != std::string::npos ||
        line.compare(space + 1, 1, "/") != 0) {
      return absl::DataLossError(path + ": malformed line \"" + line + "\"");
    }
    chain.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  return chain;
}

// What a jailed ember-vmm cannot do, whatever emberd puts into its jail: reach a host path.
absl::Status CheckJailable(const v1::VmConfig& config) {
  auto refuse = [](const std::string& field) {
    return absl::FailedPreconditionError(
        field + ": not supported with emberd --jailer (a jailed ember-vmm sees only its chroot; "
                "leave it empty)");
  };
  if (!config.vsock().uds_path().empty()) return refuse("vsock.uds_path");
  if (!config.logger().log_path().empty()) return refuse("logger.log_path");
  if (!config.metrics().metrics_path().empty()) return refuse("metrics.metrics_path");
  return absl::OkStatus();
}

// How a VM that ended while emberd was not running ended: the "CODE REASON" line ember-vmm
// wrote to its --exit-record file, or exit code -1 when there is none (it was killed).
v1::ExitInfo RecordedExit(const std::string& path) {
  v1::ExitInfo exit;
  exit.set_exit_code(-1);
  exit.set_reason("ember-vmm ended while emberd was not running (exit status unknown)");
  absl::StatusOr<std::string> record = ReadFile(path);
  if (!record.ok()) return exit;
  // The first line only, and short: the VMM's words.
  std::string line = record->substr(0, std::min(record->find('\n'), std::size_t{1024}));
  int code = -1;
  auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), code);
  if (ec != std::errc() || end == line.data() + line.size() || *end != ' ' || code < 0) return exit;
  exit.set_exit_code(code);
  exit.set_reason(line.substr(static_cast<std::size_t>(end + 1 - line.data())) +
                  " (while emberd was not running)");
  return exit;
}

// Moves a snapshot file the jailed ember-vmm wrote at `from` (in its jail) to `to`, keeping its
// owner: a rename, or across filesystems a sparse copy given back to uid:gid. The jail is the
// VMM's to fill, so `from` must be a regular file of the jail's uid with no other link: else
// the VMM could have emberd move (or copy, as root) a file that is not its own.
absl::Status MoveOutOfJail(const std::string& from, const std::string& to, uid_t uid,
                           gid_t gid) {
  base::UniqueFd in(::open(from.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!in) return base::ErrnoError("open", from);
  struct stat st {};
  if (::fstat(in.Get(), &st) != 0) return base::ErrnoError("fstat", from);
  if (!S_ISREG(st.st_mode) || st.st_uid != uid || st.st_nlink != 1) {
    return absl::InternalError(from + ": the jailed ember-vmm left something other than a "
                               "regular file of its own (uid " + std::to_string(uid) +
                               ") with one link");
  }
  if (::rename(from.c_str(), to.c_str()) == 0) {
    // The name could have been swapped between the open and the rename: what moved must be
    // what was checked.
    struct stat moved {};
    if (::lstat(to.c_str(), &moved) != 0 || moved.st_ino != st.st_ino ||
        moved.st_dev != st.st_dev) {
      ::unlink(to.c_str());
      return absl::InternalError(from + " changed while emberd moved it out of the jail");
    }
    return absl::OkStatus();
  }
  if (errno != EXDEV) return base::ErrnoError("rename", from + " to " + to);
  ::unlink(to.c_str());
  base::UniqueFd out(
      ::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out) return base::ErrnoError("open", to);
  int err = CopySparse(in.Get(), out.Get());
  if (err == 0 && ::fchown(out.Get(), uid, gid) != 0) err = errno;
  if (err != 0) {
    ::unlink(to.c_str());
    return base::ErrnoError(err, "copying " + from + " to", to);
  }
  ::unlink(from.c_str());
  return absl::OkStatus();
}

// The rule for a jailed restore's memory files: a clone maps them through a hard link in its
// jail, as the jail's uid:gid, so they must be readable by that identity (by the kernel's
// order: owner bits if it owns the file, else group bits if its group, else the others'). Files
// a jailed VM wrote are its uid's; a file on another filesystem than the jails is copied for
// the jail instead (JailFile::kLinkOrCopy), so anything readable will do.
absl::Status CheckJailCanMap(const std::string& field, const std::string& path,
                             const std::string& jail_dir, uid_t uid, gid_t gid) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return base::ErrnoError("stat", path);
  struct stat jails {};
  // Before its first VM the jails' directory may not exist: its parent is the chroot base.
  if (::stat(jail_dir.c_str(), &jails) != 0 &&
      ::stat(std::filesystem::path(jail_dir).parent_path().c_str(), &jails) != 0) {
    return base::ErrnoError("stat", jail_dir);
  }
  if (st.st_dev != jails.st_dev) return absl::OkStatus();
  mode_t bit = st.st_uid == uid ? S_IRUSR : st.st_gid == gid ? S_IRGRP : S_IROTH;
  if ((st.st_mode & bit) != 0) return absl::OkStatus();
  char mode[8];
  std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return absl::FailedPreconditionError(
      field + ": " + path + " (uid " + std::to_string(st.st_uid) + ", gid " +
      std::to_string(st.st_gid) + ", mode " + mode + ") is not readable by the jail's uid " +
      std::to_string(uid) + " / gid " + std::to_string(gid) +
      ": a jailed clone maps its snapshot's memory through a hard link, as the jail's identity. "
      "Snapshots of jailed VMs are the jail's; give one taken without --jailer to it (chown " +
      std::to_string(uid) + ":" + std::to_string(gid) + ") to restore it jailed");
}

std::string GenerateId() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lock(mu);
  char buf[20];
  std::snprintf(buf, sizeof(buf), "vm-%012llx",
                static_cast<unsigned long long>(rng() & 0xffffffffffffULL));
  return buf;
}

// The number after `field` in /proc/self/status: KiB for "VmRSS:", a count for "Threads:".
std::uint64_t ReadProcStatusNumber(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return std::strtoull(line.c_str() + std::strlen(field), nullptr, 10);
  }
  return 0;
}

std::size_t CountFds() {
  std::size_t n = 0;
  std::error_code error;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    ++n;
  }
  return n;
}

}  // namespace

// One VM. `mu` guards the record and the connection; `op_mu` serialises the API calls on
// one VM (Start vs Stop vs Delete) without blocking the supervisor. A snapshot or a restore
// holds `op_mu` for as long as its VMM works, so Stop waits for it only so long (a timed mutex).
struct VmManager::Entry {
  std::timed_mutex op_mu;
  std::mutex mu;
  std::condition_variable cv;  // responses, HELLO, process exit
  v1::Vm vm;                   // guarded by mu
  bool creating = false;       // guarded by mu: Create has not returned yet
  bool deleted = false;        // guarded by mu
  bool hello = false;          // guarded by mu
  base::UniqueFd control;      // guarded by mu; closed only by the supervisor
  base::UniqueFd pidfd;        // guarded by mu; closed only by the supervisor
  bool child = false;          // guarded by mu: emberd spawned it (can read its exit status)
  std::uint64_t next_id = 1;   // guarded by mu
  std::map<std::uint64_t, std::optional<v1::ControlResponse>> responses;  // guarded by mu
  std::optional<std::pair<int, std::string>> vmm_exit;  // guarded by mu: from EXITED
  control::FrameReader reader;  // supervisor thread only
  JailChain jail_chain;         // guarded by mu; jailed VMs only
  // The snapshot the VM's next DIFF snapshot applies onto (its latest, or the one it was
  // restored from); empty when emberd knows of none.
  std::string last_snapshot_id;  // guarded by mu
};

std::shared_ptr<EventHub::Watcher> EventHub::Subscribe(const std::string& vm_id) {
  auto watcher = std::make_shared<Watcher>();
  watcher->vm_id = vm_id;
  std::lock_guard lock(mu_);
  watchers_.push_back(watcher);
  return watcher;
}

void EventHub::Unsubscribe(const std::shared_ptr<Watcher>& watcher) {
  std::lock_guard lock(mu_);
  std::erase(watchers_, watcher);
}

void EventHub::Publish(const v1::Event& event) {
  std::lock_guard lock(mu_);
  for (auto& watcher : watchers_) {
    if (!watcher->vm_id.empty() && watcher->vm_id != event.vm_id()) continue;
    std::lock_guard wlock(watcher->mu);
    if (watcher->queue.size() >= kMaxQueuedEvents) {
      watcher->overflowed = true;
    } else {
      watcher->queue.push_back(event);
    }
    watcher->cv.notify_all();
  }
}

std::size_t EventHub::watchers() const {
  std::lock_guard lock(mu_);
  return watchers_.size();
}

absl::StatusOr<std::unique_ptr<VmManager>> VmManager::Create(
    ManagerOptions options, std::unique_ptr<VmmLauncher> launcher) {
  std::unique_ptr<VmManager> manager(new VmManager(std::move(options), std::move(launcher)));
  for (const char* sub : {"", "/vms"}) {
    std::string dir = manager->options_.state_dir + sub;
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return base::ErrnoError("mkdir", dir);
  }
  EMBER_ASSIGN_OR_RETURN(manager->catalog_, SnapshotCatalog::Create(manager->options_.state_dir));
  manager->epoll_.Reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!manager->epoll_) return base::ErrnoError("epoll_create1");
  manager->wakeup_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!manager->wakeup_) return base::ErrnoError("eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = manager->wakeup_.Get();
  if (::epoll_ctl(manager->epoll_.Get(), EPOLL_CTL_ADD, manager->wakeup_.Get(), &ev) != 0) {
    return base::ErrnoError("epoll_ctl(ADD)", "wakeup eventfd");
  }
  VmManager* self = manager.get();
  manager->supervisor_ = std::thread([self] { self->SuperviseLoop(); });
  return manager;
}

VmManager::~VmManager() {
  {
    std::lock_guard lock(watch_mu_);
    stopping_ = true;
  }
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wakeup_.Get(), &one, sizeof(one));
  if (supervisor_.joinable()) supervisor_.join();
}

std::string VmManager::VmDir(const std::string& vm_id) const {
  return options_.state_dir + "/vms/" + vm_id;
}

absl::StatusOr<std::shared_ptr<VmManager::Entry>> VmManager::Find(const std::string& vm_id) {
  std::lock_guard lock(mu_);
  auto it = vms_.find(vm_id);
  if (it == vms_.end()) return absl::NotFoundError("vm_id: no VM \"" + vm_id + "\"");
  return it->second;
}

std::size_t VmManager::LiveVms() {
  std::size_t live = 0;
  for (auto& [id, entry] : vms_) {
    std::lock_guard lock(entry->mu);
    if (entry->vm.state() != v1::Vm::STOPPED) ++live;
  }
  return live;
}

void VmManager::WatchFd(int fd, const std::shared_ptr<Entry>& entry, bool is_pidfd) {
  std::lock_guard lock(watch_mu_);
  watches_[fd] = Watch{entry, is_pidfd};
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_.Get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    EMBER_LOG(kError) << "emberd: epoll_ctl(ADD): " << std::strerror(errno);
  }
}

void VmManager::UnwatchFd(int fd) {
  std::lock_guard lock(watch_mu_);
  ::epoll_ctl(epoll_.Get(), EPOLL_CTL_DEL, fd, nullptr);
  watches_.erase(fd);
}

void VmManager::SuperviseLoop() {
  std::array<epoll_event, 64> events{};
  while (true) {
    int n = ::epoll_wait(epoll_.Get(), events.data(), static_cast<int>(events.size()), -1);
    if (n < 0 && errno != EINTR) {
      EMBER_LOG(kError) << "emberd: epoll_wait: " << std::strerror(errno);
      return;
    }
    for (int i = 0; i < n; ++i) {
      int fd = events[static_cast<std::size_t>(i)].data.fd;
      if (fd == wakeup_.Get()) {
        std::lock_guard lock(watch_mu_);
        if (stopping_) return;
        continue;
      }
      std::optional<Watch> watch;
      {
        std::lock_guard lock(watch_mu_);
        auto it = watches_.find(fd);
        if (it != watches_.end()) watch = it->second;
      }
      if (!watch) continue;
      if (watch->is_pidfd) {
        // The fd number may have been reused since epoll_wait returned: check it is ready.
        pollfd pfd{fd, POLLIN, 0};
        if (::poll(&pfd, 1, 0) == 1) OnProcessExit(watch->entry);
      } else {
        OnControlReadable(watch->entry);
      }
    }
  }
}

void VmManager::OnControlReadable(const std::shared_ptr<Entry>& entry) {
  std::unique_lock lock(entry->mu);
  if (!entry->control) return;
  int fd = entry->control.Get();
  absl::StatusOr<bool> open = entry->reader.ReadFrom(fd);
  std::string payload;
  while (true) {
    absl::StatusOr<bool> got = entry->reader.Next(&payload);
    if (!got.ok()) {
      EMBER_LOG(kWarn) << "emberd: VM " << entry->vm.vm_id() << ": " << got.status().message();
      open = false;
      break;
    }
    if (!*got) break;
    v1::VmmMessage message;
    if (!message.ParseFromString(payload)) {
      EMBER_LOG(kWarn) << "emberd: VM " << entry->vm.vm_id() << ": unparsable control message";
      continue;
    }
    HandleVmmMessage(*entry, message);
  }
  if (!open.ok() || !*open) {
    // ember-vmm closed the channel (it is exiting, or another controller took over).
    UnwatchFd(fd);
    entry->control.Reset();
    entry->reader = control::FrameReader();
    entry->cv.notify_all();
  }
}

void VmManager::HandleVmmMessage(Entry& entry, const v1::VmmMessage& message) {
  if (message.has_response()) {
    auto it = entry.responses.find(message.response().id());
    if (it != entry.responses.end()) {
      it->second = message.response();
      entry.cv.notify_all();
    }
    return;
  }
  const v1::ControlEvent& event = message.event();
  switch (event.kind()) {
    case v1::ControlEvent::HELLO:
      entry.hello = true;
      entry.vm.set_pid(event.status().pid());
      if (event.status().boot_time_us() != 0) {
        entry.vm.set_boot_time_us(event.status().boot_time_us());
      }
      ApplyVmmState(entry, event.status().state());
      entry.cv.notify_all();
      break;
    case v1::ControlEvent::STATE:
      ApplyVmmState(entry, event.status().state());
      break;
    case v1::ControlEvent::BOOTED: {
      entry.vm.set_boot_time_us(event.boot_time_us());
      Persist(entry);
      v1::Event out;
      out.set_kind(v1::Event::BOOTED);
      out.set_boot_time_us(event.boot_time_us());
      Publish(entry, out);
      break;
    }
    case v1::ControlEvent::EXITED:
      entry.vmm_exit = {event.exit_code(), event.reason()};
      break;
    default:
      break;
  }
}

void VmManager::ApplyVmmState(Entry& entry, v1::VmmStatus::State state) {
  switch (state) {
    case v1::VmmStatus::CREATED: SetState(entry, v1::Vm::CREATED); break;
    case v1::VmmStatus::RUNNING: SetState(entry, v1::Vm::RUNNING); break;
    case v1::VmmStatus::PAUSED: SetState(entry, v1::Vm::PAUSED); break;
    default: break;  // ENDED: the process exit makes it STOPPED
  }
}

void VmManager::SetState(Entry& entry, v1::Vm::State state) {
  // STOPPED is final: a response that raced with the process exit must not revive the VM.
  if (entry.vm.state() == state || entry.vm.state() == v1::Vm::STOPPED) return;
  EMBER_LOG(kInfo) << "emberd: VM " << entry.vm.vm_id() << ": " << StateName(entry.vm.state())
                   << " -> " << StateName(state);
  entry.vm.set_state(state);
  Persist(entry);
  v1::Event event;
  event.set_kind(v1::Event::STATE);
  event.set_state(state);
  Publish(entry, event);
}

void VmManager::Persist(Entry& entry) {
  if (entry.deleted) return;
  if (auto status = WriteMessageJson(VmDir(entry.vm.vm_id()) + "/vm.json", entry.vm);
      !status.ok()) {
    EMBER_LOG(kError) << "emberd: cannot record VM " << entry.vm.vm_id() << ": "
                      << status.message();
  }
}

void VmManager::Publish(Entry& entry, v1::Event event) {
  if (entry.creating) return;  // nobody knows this VM until Create returns
  event.set_vm_id(entry.vm.vm_id());
  event.set_unix_ms(NowUnixMs());
  events_.Publish(event);
}

void VmManager::OnProcessExit(const std::shared_ptr<Entry>& entry) {
  std::unique_lock lock(entry->mu);
  if (!entry->pidfd) return;
  v1::ExitInfo exit;
  exit.set_exit_code(-1);
  if (entry->child) {
    siginfo_t info{};
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(entry->pidfd.Get()), &info,
                 WEXITED | WNOHANG) == 0 &&
        info.si_pid != 0) {
      if (info.si_code == CLD_EXITED) {
        exit.set_exit_code(info.si_status);
      } else {
        exit.set_signal(info.si_status);
      }
    }
  }
  // Drain what ember-vmm said last (its EXITED event) before closing the channel.
  if (entry->control) {
    int fd = entry->control.Get();
    (void)entry->reader.ReadFrom(fd);
    std::string payload;
    while (true) {
      absl::StatusOr<bool> got = entry->reader.Next(&payload);
      if (!got.ok() || !*got) break;
      v1::VmmMessage message;
      if (message.ParseFromString(payload)) HandleVmmMessage(*entry, message);
    }
    UnwatchFd(fd);
    entry->control.Reset();
  }
  UnwatchFd(entry->pidfd.Get());
  entry->pidfd.Reset();

  if (exit.signal() != 0) {
    exit.set_reason(std::string("ember-vmm was killed by signal ") + std::to_string(exit.signal()) +
                    " (" + strsignal(exit.signal()) + ")");
  } else if (entry->vmm_exit) {
    if (exit.exit_code() == -1) exit.set_exit_code(entry->vmm_exit->first);
    exit.set_reason(entry->vmm_exit->second);
  } else if (exit.exit_code() >= 0) {
    exit.set_reason("ember-vmm exited with code " + std::to_string(exit.exit_code()) + ": " +
                    LastError(VmDir(entry->vm.vm_id()) + "/vmm.log"));
  } else {
    exit.set_reason("ember-vmm ended (exit status unknown: it was started by an earlier emberd)");
  }
  EMBER_LOG(kInfo) << "emberd: VM " << entry->vm.vm_id() << " ended: " << exit.reason();
  *entry->vm.mutable_exit() = exit;
  entry->vm.set_pid(0);
  v1::Event event;
  event.set_kind(v1::Event::EXITED);
  *event.mutable_exit() = exit;
  Publish(*entry, event);
  SetState(*entry, v1::Vm::STOPPED);
  Persist(*entry);
  entry->cv.notify_all();
}

absl::Status VmManager::Attach(const std::shared_ptr<Entry>& entry, pid_t pid, bool child,
                              base::UniqueFd control) {
  base::UniqueFd pidfd;
  if (pid > 0) {
    pidfd = PidfdOpen(pid);
    if (!pidfd) return base::ErrnoError("pidfd_open", "pid " + std::to_string(pid));
  }
  if (!control) {
    EMBER_ASSIGN_OR_RETURN(control, ConnectUnix(VmDir(entry->vm.vm_id()) + "/control.sock"));
  }
  std::lock_guard lock(entry->mu);
  entry->child = child;
  entry->control = std::move(control);
  WatchFd(entry->control.Get(), entry, false);
  if (pidfd) {
    entry->pidfd = std::move(pidfd);
    WatchFd(entry->pidfd.Get(), entry, true);
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::ControlResponse> VmManager::Call(Entry& entry, v1::ControlRequest request,
                                                    Wait wait) {
  std::unique_lock lock(entry.mu);
  if (!entry.control) {
    return absl::UnavailableError("VM \"" + entry.vm.vm_id() + "\": its ember-vmm is not connected");
  }
  std::uint64_t id = entry.next_id++;
  request.set_id(id);
  std::string frame;
  EMBER_RETURN_IF_ERROR(control::AppendFrame(request, &frame));
  EMBER_RETURN_IF_ERROR(control::WriteAll(entry.control.Get(), frame, 2000));
  entry.responses[id];
  auto answered_or_gone = [&] { return entry.responses[id].has_value() || !entry.control; };
  bool answered = true;
  if (wait == Wait::kWhileConnected) {
    // The VMM's exit closes the connection, so this ends when the VMM does.
    entry.cv.wait(lock, answered_or_gone);
  } else {
    answered = entry.cv.wait_for(lock, options_.request_timeout, answered_or_gone);
  }
  std::optional<v1::ControlResponse> response = std::move(entry.responses[id]);
  entry.responses.erase(id);
  if (!response) {
    return absl::UnavailableError("VM \"" + entry.vm.vm_id() + "\": ember-vmm " +
                                  (answered ? "went away" : "did not answer in time"));
  }
  return *response;
}

bool VmManager::WaitForExit(Entry& entry, std::chrono::milliseconds timeout) {
  std::unique_lock lock(entry.mu);
  return entry.cv.wait_for(lock, timeout, [&] { return entry.vm.state() == v1::Vm::STOPPED; });
}

absl::StatusOr<v1::Vm> VmManager::CreateVm(std::string vm_id, const v1::VmConfig& config) {
  return SpawnVm(std::move(vm_id), config, nullptr);
}

absl::StatusOr<v1::Vm> VmManager::SpawnVm(std::string vm_id, const v1::VmConfig& config,
                                          const RestorePlan* restore) {
  auto entry = std::make_shared<Entry>();
  {
    std::lock_guard lock(mu_);
    if (vm_id.empty()) {
      do vm_id = GenerateId();
      while (vms_.count(vm_id) != 0);
    }
    if (vms_.count(vm_id) != 0) {
      return absl::AlreadyExistsError("vm_id: a VM \"" + vm_id + "\" already exists");
    }
    if (LiveVms() >= options_.max_vms) {
      return absl::ResourceExhaustedError("emberd runs its limit of " +
                                          std::to_string(options_.max_vms) +
                                          " VMs (--max-vms); stop or delete one first");
    }
    entry->vm.set_vm_id(vm_id);
    entry->vm.set_state(v1::Vm::CREATED);
    *entry->vm.mutable_config() = config;
    entry->vm.set_created_unix_ms(NowUnixMs());
    entry->vm.set_state_dir(VmDir(vm_id));
    if (restore != nullptr) {
      entry->vm.set_restored_from(restore->restored_from);
      entry->last_snapshot_id = restore->snapshot_id;
    }
    entry->creating = true;
    vms_[vm_id] = entry;
  }
  std::lock_guard op(entry->op_mu);
  auto fail = [&](absl::Status status) {
    {
      std::lock_guard lock(mu_);
      vms_.erase(vm_id);
    }
    {
      std::lock_guard lock(entry->mu);
      entry->deleted = true;
      if (entry->pidfd) PidfdKill(entry->pidfd.Get(), SIGKILL);
    }
    (void)RemoveTree(VmDir(vm_id));
    if (!options_.jail_dir.empty()) (void)RemoveTree(options_.jail_dir + "/" + vm_id);
    return status;
  };
  if (!options_.jail_dir.empty()) {
    // ember-jailer's ids: letters, digits and dashes.
    if (vm_id.find('_') != std::string::npos) {
      return fail(absl::InvalidArgumentError(
          "vm_id: \"" + vm_id + "\" has an underscore, which ember-jailer's ids (emberd "
          "--jailer) do not allow"));
    }
  }

  std::string dir = VmDir(vm_id);
  if (::mkdir(dir.c_str(), 0700) != 0) return fail(base::ErrnoError("mkdir", dir));
  // config.json is the readable record; ember-vmm reads the binary config.pb, which spares it
  // running ember-config (the JSON parser) on every start.
  absl::StatusOr<std::string> json = ToUserJson(config);
  if (!json.ok()) return fail(json.status());
  if (auto status = WriteFileAtomic(dir + "/config.json", *json); !status.ok()) return fail(status);
  if (auto status = WriteFileAtomic(dir + "/config.pb", config.SerializeAsString()); !status.ok()) {
    return fail(status);
  }
  absl::StatusOr<base::UniqueFd> listener = ListenUnix(dir + "/control.sock");
  if (!listener.ok()) return fail(listener.status());
  // Connect before ember-vmm exists: the connection waits in the backlog, so even a VMM that
  // fails at once (a bad kernel) is seen through the channel rather than a refused connect.
  absl::StatusOr<base::UniqueFd> conn = ConnectUnix(dir + "/control.sock");
  if (!conn.ok()) return fail(conn.status());
  base::UniqueFd log(::open((dir + "/vmm.log").c_str(),
                            O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!log) return fail(base::ErrnoError("open", dir + "/vmm.log"));

  LaunchSpec spec;
  spec.vm_id = vm_id;
  spec.vm_dir = dir;
  if (!options_.jail_dir.empty()) {
    absl::Status status = restore == nullptr
                              ? PrepareJailedLaunch(vm_id, config, &spec)
                              : PrepareJailedRestore(vm_id, *restore, config, &spec);
    if (!status.ok()) return fail(status);
  } else if (restore == nullptr) {
    spec.vmm_args = {"--config-proto", dir + "/config.pb"};
  } else {
    absl::StatusOr<std::vector<std::string>> args = RestoreArgs(*restore, config);
    if (!args.ok()) return fail(args.status());
    spec.vmm_args = std::move(*args);
  }
  if (options_.jail_dir.empty()) {
    spec.vmm_args.push_back("--serial-out");
    spec.vmm_args.push_back(dir + "/console.log");
  }
  // How the VM ended, for an emberd that was not running then (Recover reads it).
  spec.vmm_args.push_back("--exit-record");
  spec.vmm_args.push_back(options_.jail_dir.empty() ? dir + "/exit" : "/exit");
  spec.control_listen_fd = listener->Get();
  spec.stderr_fd = log.Get();
  absl::StatusOr<pid_t> pid = launcher_->Launch(spec);
  if (!pid.ok()) return fail(pid.status());
  listener->Reset();  // ember-vmm holds the only listening copy now
  if (auto status = Attach(entry, *pid, true, std::move(*conn)); !status.ok()) {
    ::kill(*pid, SIGKILL);
    return fail(status);
  }
  std::unique_lock lock(entry->mu);
  entry->vm.set_pid(*pid);
  Persist(*entry);
  if (!options_.jail_dir.empty() && restore != nullptr) {
    // The clone's ember-vmm names these as the bases of its first diff snapshot.
    entry->jail_chain = restore->jail_bases;
    entry->jail_chain.emplace_back(restore->jail_memory_name, restore->memory_path);
    if (auto status = WriteJailChain(dir + "/" + kJailChainFile, entry->jail_chain);
        !status.ok()) {
      lock.unlock();
      return fail(status);
    }
  }
  auto hello_or_exit = [&] { return entry->hello || entry->vm.state() == v1::Vm::STOPPED; };
  bool ready = true;
  if (restore != nullptr) {
    // A restore's time grows with the snapshot: wait while its VMM lives (its exit, or Stop,
    // ends the wait).
    entry->cv.wait(lock, hello_or_exit);
  } else {
    ready = entry->cv.wait_for(lock, options_.create_timeout, hello_or_exit);
  }
  if (!ready || !entry->hello) {
    absl::Status status;
    if (!ready) {
      status = absl::DeadlineExceededError("VM \"" + vm_id + "\": ember-vmm did not finish "
                                           "building the VM in time");
    } else if (entry->vm.exit().exit_code() == 2) {
      // ember-vmm's exit code 2: the config (kernel, drives, ...) or the snapshot is the
      // user's problem.
      status = absl::InvalidArgumentError((restore != nullptr ? "snapshot: " : "config: ") +
                                          LastError(dir + "/vmm.log"));
    } else {
      status = absl::InternalError("VM \"" + vm_id + "\": " + entry->vm.exit().reason());
    }
    lock.unlock();
    return fail(status);
  }
  entry->creating = false;
  v1::Vm vm = entry->vm;
  lock.unlock();
  v1::Event event;
  event.set_kind(v1::Event::STATE);
  event.set_state(vm.state());  // CREATED, or PAUSED for a restored VM
  event.set_vm_id(vm_id);
  event.set_unix_ms(NowUnixMs());
  events_.Publish(event);
  EMBER_LOG(kInfo) << "emberd: VM " << vm_id << (restore != nullptr ? " restored" : " created")
                   << " (pid " << vm.pid() << ")";
  return vm;
}

namespace {

// Adds `host` to the files put into the jail as `name`; returns the path the jail sees.
std::string AddJailFile(LaunchSpec* spec, JailFile::How how, const std::string& host,
                        const std::string& name) {
  spec->jail_files.push_back(JailFile{how, std::filesystem::absolute(host).string(), name});
  return "/" + name;
}

}  // namespace

std::string VmManager::JailRoot(const std::string& vm_id) const {
  return options_.jail_dir + "/" + vm_id + "/root";
}

absl::Status VmManager::PrepareJailedLaunch(const std::string& vm_id, const v1::VmConfig& config,
                                            LaunchSpec* spec) {
  EMBER_RETURN_IF_ERROR(CheckJailable(config));
  std::string dir = VmDir(vm_id);
  v1::VmConfig jailed = config;
  auto add = [&](JailFile::How how, const std::string& host, const std::string& name) {
    return AddJailFile(spec, how, host, name);
  };
  v1::BootSource* boot = jailed.mutable_boot_source();
  if (!boot->kernel_image_path().empty()) {
    boot->set_kernel_image_path(add(JailFile::How::kLinkOrCopy, boot->kernel_image_path(), "kernel"));
  }
  if (!boot->initrd_path().empty()) {
    boot->set_initrd_path(add(JailFile::How::kLinkOrCopy, boot->initrd_path(), "initrd"));
  }
  for (int i = 0; i < jailed.drives_size(); ++i) {
    v1::Drive* drive = jailed.mutable_drives(i);
    if (drive->path_on_host().empty()) continue;
    drive->set_path_on_host(
        add(JailFile::How::kLink, drive->path_on_host(), "drive" + std::to_string(i)));
  }
  EMBER_RETURN_IF_ERROR(WriteFileAtomic(dir + "/jail-config.pb", jailed.SerializeAsString()));
  add(JailFile::How::kCopy, dir + "/jail-config.pb", "config.pb");
  // emberd reads the console through a symlink into the jail.
  add(JailFile::How::kSymlinkHost, dir + "/console.log", "console.log");
  spec->vmm_args = {"--config-proto", "/config.pb", "--serial-out", "/console.log"};
  return absl::OkStatus();
}

absl::Status VmManager::PrepareJailedRestore(const std::string& vm_id, const RestorePlan& plan,
                                             const v1::VmConfig& config, LaunchSpec* spec) {
  // `config` is the snapshotted VM's with the clone's overrides: what the clone will open.
  EMBER_RETURN_IF_ERROR(CheckJailable(config));
  RestorePlan jailed = plan;  // the same restore, in the paths the jail sees
  // The state file is read once: a private copy costs little and needs no rule on its owner.
  jailed.state_path = AddJailFile(spec, JailFile::How::kCopy, plan.state_path, "snapshot.state");
  // Memory is mapped MAP_PRIVATE read-only, so every clone can share the file's inode.
  jailed.memory_path =
      AddJailFile(spec, JailFile::How::kLinkOrCopy, plan.memory_path, plan.jail_memory_name);
  for (const auto& [name, host] : plan.jail_bases) {
    AddJailFile(spec, JailFile::How::kLinkOrCopy, host, name);
  }
  // The state file names the drives as the snapshotted VM saw them (a jail's "/drive0" or a
  // host path), neither of which this jail has: every drive gets a link in the jail and an
  // override to it. Sorted by id so that a clone's command line is reproducible.
  std::map<std::string, std::string> drives;
  for (const v1::Drive& drive : config.drives()) {
    if (!drive.path_on_host().empty()) drives[drive.drive_id()] = drive.path_on_host();
  }
  // With no recorded configuration, the overrides are all emberd knows of the drives.
  for (const auto& [id, path] : plan.overrides.drive_path_on_host()) drives[id] = path;
  jailed.overrides.clear_drive_path_on_host();
  int index = 0;
  for (const auto& [id, host] : drives) {
    (*jailed.overrides.mutable_drive_path_on_host())[id] =
        AddJailFile(spec, JailFile::How::kLink, host, "drive" + std::to_string(index++));
  }
  EMBER_ASSIGN_OR_RETURN(spec->vmm_args, RestoreArgs(jailed, config));
  AddJailFile(spec, JailFile::How::kSymlinkHost, VmDir(vm_id) + "/console.log", "console.log");
  spec->vmm_args.push_back("--serial-out");
  spec->vmm_args.push_back("/console.log");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> VmManager::RestoreArgs(const RestorePlan& plan,
                                                                const v1::VmConfig& config) {
  std::vector<std::string> args = {"--restore-from", plan.state_path, "--restore-mem",
                                   plan.memory_path};
  if (plan.uffd) {
    // The working set is <memory>.ws, beside the memory file (ember-vmm's default).
    args.insert(args.end(), {"--restore-mem-backend", "uffd"});
    if (plan.prefetch) args.push_back("--prefetch-working-set");
  }
  // Sorted (std::map) so that a clone's command line is reproducible.
  std::map<std::string, std::string> drives;
  for (const auto& [id, path] : plan.overrides.drive_path_on_host()) drives[id] = path;
  for (const auto& [id, path] : drives) {
    args.push_back("--drive-override");
    args.push_back(id + "=" + path);
  }
  std::map<std::string, std::pair<std::string, std::string>> ifaces;  // id -> (tap, mac)
  for (const auto& [id, tap] : plan.overrides.iface_host_dev_name()) ifaces[id].first = tap;
  for (const auto& [id, mac] : plan.overrides.iface_guest_mac()) ifaces[id].second = mac;
  for (const v1::NetworkInterface& iface : config.network_interfaces()) {
    // A MAC alone keeps the interface's tap (config already has the overrides applied).
    auto it = ifaces.find(iface.iface_id());
    if (it != ifaces.end() && it->second.first.empty()) it->second.first = iface.host_dev_name();
  }
  for (const auto& [id, tap_mac] : ifaces) {
    // --net-override IFACE_ID=TAP[,MAC]; an empty TAP keeps the snapshot's.
    args.push_back("--net-override");
    args.push_back(id + "=" + tap_mac.first +
                   (tap_mac.second.empty() ? "" : "," + tap_mac.second));
  }
  if (!plan.overrides.vsock_uds_path().empty()) {
    args.push_back("--vsock-override");
    args.push_back(plan.overrides.vsock_uds_path());
  }
  return args;
}

absl::StatusOr<v1::Vm> VmManager::SimpleOp(const std::string& vm_id, v1::Vm::State from,
                                           const char* verb, const v1::ControlRequest& request) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  std::lock_guard op(entry->op_mu);
  {
    std::lock_guard lock(entry->mu);
    if (entry->creating) return absl::FailedPreconditionError("VM \"" + vm_id + "\" is still being created");
    if (entry->vm.state() != from) {
      return absl::FailedPreconditionError(std::string("cannot ") + verb + " VM \"" + vm_id +
                                           "\": it is " + StateName(entry->vm.state()) +
                                           ", not " + StateName(from));
    }
  }
  EMBER_ASSIGN_OR_RETURN(v1::ControlResponse response, Call(*entry, request));
  std::lock_guard lock(entry->mu);
  if (response.code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(response.code()),
                        "VM \"" + vm_id + "\": " + response.message());
  }
  ApplyVmmState(*entry, response.status().state());
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
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  std::unique_lock op(entry->op_mu, std::defer_lock);
  if (!op.try_lock_for(timeout)) {
    // A snapshot or a restore has kept the VMM busy for longer than the stop may take: end it
    // as a VMM that does not answer the stop is ended. That call then fails and gives op_mu up.
    std::lock_guard lock(entry->mu);
    EMBER_LOG(kWarn) << "emberd: VM " << vm_id << ": still busy with a snapshot or restore "
                     << "after " << timeout.count() << " ms; killing it";
    if (entry->pidfd) PidfdKill(entry->pidfd.Get(), SIGKILL);
  }
  if (!op.owns_lock()) op.lock();
  {
    std::lock_guard lock(entry->mu);
    if (entry->vm.state() == v1::Vm::STOPPED) return entry->vm;
  }
  v1::ControlRequest request;
  request.mutable_stop()->set_reason("stopped through the API");
  absl::StatusOr<v1::ControlResponse> response = Call(*entry, request);
  if (!response.ok()) {
    EMBER_LOG(kWarn) << "emberd: VM " << vm_id << ": " << response.status().message()
                     << "; killing it";
  }
  std::unique_lock lock(entry->mu);
  auto stopped = [&] { return entry->vm.state() == v1::Vm::STOPPED; };
  if (!response.ok() || !entry->cv.wait_for(lock, timeout, stopped)) {
    if (entry->pidfd) PidfdKill(entry->pidfd.Get(), SIGKILL);
    if (!entry->cv.wait_for(lock, std::chrono::seconds(5), stopped)) {
      return absl::UnavailableError("VM \"" + vm_id + "\": ember-vmm did not exit after SIGKILL");
    }
  }
  return entry->vm;
}

absl::Status VmManager::Delete(const std::string& vm_id, bool force) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  {
    std::lock_guard lock(entry->mu);
    if (entry->creating) return absl::FailedPreconditionError("VM \"" + vm_id + "\" is still being created");
    if (entry->vm.state() != v1::Vm::STOPPED && !force) {
      return absl::FailedPreconditionError("cannot delete VM \"" + vm_id + "\": it is " +
                                           StateName(entry->vm.state()) +
                                           "; stop it first or set force");
    }
  }
  if (force) EMBER_RETURN_IF_ERROR(Stop(vm_id, std::chrono::milliseconds(2000)).status());
  std::lock_guard op(entry->op_mu);
  {
    std::lock_guard lock(mu_);
    auto it = vms_.find(vm_id);
    if (it == vms_.end() || it->second != entry) {
      return absl::NotFoundError("vm_id: no VM \"" + vm_id + "\"");
    }
    vms_.erase(it);
  }
  {
    std::lock_guard lock(entry->mu);
    entry->deleted = true;
    v1::Event event;
    event.set_kind(v1::Event::DELETED);
    Publish(*entry, event);
  }
  EMBER_RETURN_IF_ERROR(RemoveTree(VmDir(vm_id)));
  if (!options_.jail_dir.empty()) EMBER_RETURN_IF_ERROR(RemoveTree(options_.jail_dir + "/" + vm_id));
  EMBER_LOG(kInfo) << "emberd: VM " << vm_id << " deleted";
  return absl::OkStatus();
}

absl::StatusOr<v1::Vm> VmManager::Get(const std::string& vm_id) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  std::lock_guard lock(entry->mu);
  if (entry->creating) return absl::NotFoundError("vm_id: VM \"" + vm_id + "\" is still being created");
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
    if (!entry->creating) vms.push_back(entry->vm);
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
  EMBER_ASSIGN_OR_RETURN(v1::ControlResponse response, Call(*entry, request));
  if (response.code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(response.code()), response.message());
  }
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
  return "{\"utc_timestamp_ms\": " + std::to_string(NowUnixMs()) +
         ", \"emberd\": {\"vms\": " + std::to_string(total) +
         ", \"live_vms\": " + std::to_string(live) +
         ", \"watchers\": " + std::to_string(events_.watchers()) +
         ", \"rss_kib\": " + std::to_string(ReadProcStatusNumber("VmRSS:")) +
         ", \"fds\": " + std::to_string(CountFds()) +
         ", \"threads\": " + std::to_string(ReadProcStatusNumber("Threads:")) + "}}";
}

absl::Status VmManager::UpdateRateLimits(const v1::UpdateRateLimitsRequest& request) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(request.vm_id()));
  v1::ControlRequest control;
  {
    std::lock_guard lock(entry->mu);
    const v1::VmConfig& config = entry->vm.config();
    for (int i = 0; i < request.drives_size(); ++i) {
      const auto& drive = request.drives(i);
      bool known = false;
      for (const auto& d : config.drives()) known = known || d.drive_id() == drive.drive_id();
      if (!known) {
        return absl::NotFoundError("drives[" + std::to_string(i) + "].drive_id: VM \"" +
                                   request.vm_id() + "\" has no drive \"" + drive.drive_id() + "\"");
      }
      auto* out = control.mutable_update_rate_limits()->add_drives();
      out->set_drive_id(drive.drive_id());
      *out->mutable_rate_limiter() = drive.rate_limiter();
    }
    for (int i = 0; i < request.interfaces_size(); ++i) {
      const auto& iface = request.interfaces(i);
      bool known = false;
      for (const auto& n : config.network_interfaces()) known = known || n.iface_id() == iface.iface_id();
      if (!known) {
        return absl::NotFoundError("interfaces[" + std::to_string(i) + "].iface_id: VM \"" +
                                   request.vm_id() + "\" has no interface \"" + iface.iface_id() +
                                   "\"");
      }
      auto* out = control.mutable_update_rate_limits()->add_interfaces();
      out->set_iface_id(iface.iface_id());
      *out->mutable_rx_rate_limiter() = iface.rx_rate_limiter();
      *out->mutable_tx_rate_limiter() = iface.tx_rate_limiter();
    }
    if (entry->vm.state() != v1::Vm::RUNNING && entry->vm.state() != v1::Vm::PAUSED) {
      return absl::FailedPreconditionError("cannot update rate limits of VM \"" +
                                           request.vm_id() + "\": it is " +
                                           StateName(entry->vm.state()));
    }
  }
  EMBER_ASSIGN_OR_RETURN(v1::ControlResponse response, Call(*entry, control));
  if (response.code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(response.code()), response.message());
  }
  return absl::OkStatus();
}

namespace {

// What a failed snapshot into a caller's directory may have left there: its state and memory
// files, and the temporary files (NAME.tmp-...) of an ember-vmm killed while writing them;
// then the directory itself if that emptied it. Anything else in it is the caller's.
void RemoveFailedSnapshotFiles(const std::string& dir) {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (name == "state" || name == "memory" || base::IsAtomicFileTemp(name, "state") ||
        base::IsAtomicFileTemp(name, "memory")) {
      ::unlink(entry.path().c_str());
    }
  }
  ::rmdir(dir.c_str());  // fails, leaving it, unless empty
}

}  // namespace

absl::StatusOr<v1::Snapshot> VmManager::CreateSnapshot(const v1::CreateSnapshotRequest& request) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(request.vm_id()));
  const bool jailed = !options_.jail_dir.empty();
  const bool diff = request.type() == v1::CreateSnapshotRequest::DIFF;
  std::lock_guard op(entry->op_mu);
  v1::Snapshot snapshot;
  {
    std::lock_guard lock(entry->mu);
    if (diff) snapshot.set_base_snapshot_id(entry->last_snapshot_id);
    if (entry->vm.state() != v1::Vm::PAUSED) {
      return absl::FailedPreconditionError("cannot snapshot VM \"" + request.vm_id() +
                                           "\": it is " + StateName(entry->vm.state()) +
                                           ", not PAUSED (pause it first)");
    }
    if (request.type() == v1::CreateSnapshotRequest::DIFF &&
        !entry->vm.config().machine_config().track_dirty_pages()) {
      return absl::FailedPreconditionError(
          "type: a DIFF snapshot needs machine-config.track_dirty_pages, which VM \"" +
          request.vm_id() + "\" was created without");
    }
    if (jailed && diff && entry->jail_chain.empty()) {
      // emberd names a jailed diff's bases (kJailBasesFile) from this chain.
      return absl::FailedPreconditionError(
          "type: a DIFF snapshot needs an earlier snapshot (or a restore) of VM \"" +
          request.vm_id() + "\" to apply onto, and emberd knows of none");
    }
  }
  v1::VmConfig config;
  {
    std::lock_guard lock(entry->mu);
    config = entry->vm.config();
  }
  // Reserved; recorded below or given up on failure.
  snapshot.set_snapshot_id(catalog_->Reserve(request.vm_id(), NowUnixMs()));
  auto unreserve = [&](absl::Status status) {
    catalog_->Unreserve(snapshot.snapshot_id());
    return status;
  };
  std::string record_dir = catalog_->RecordDir(snapshot.snapshot_id());
  std::string dir = request.snapshot_dir().empty() ? record_dir : request.snapshot_dir();
  snapshot.set_vm_id(request.vm_id());
  snapshot.set_type(request.type());
  snapshot.set_state_path(dir + "/state");
  snapshot.set_memory_path(dir + "/memory");
  snapshot.set_created_unix_ms(NowUnixMs());
  // A caller's directory may already hold a snapshot: writing over it would pull the memory
  // from under the clones restored from it and silently change what its record restores.
  for (const std::string& path : {snapshot.state_path(), snapshot.memory_path()}) {
    if (::access(path.c_str(), F_OK) == 0) {
      return unreserve(absl::AlreadyExistsError(
          "snapshot_dir: " + dir + " already holds a snapshot (" + path +
          "); choose another directory, or DeleteSnapshot the one there first"));
    }
  }
  // A jailed ember-vmm writes into its jail's root, which it owns (emberd then moves the files
  // to `dir`), under names that are also what a clone's jail calls them: the names its diff
  // snapshots will give as their bases.
  std::string jail_state = "/" + snapshot.snapshot_id() + ".state";
  std::string jail_memory = "/" + snapshot.snapshot_id() + ".mem";
  v1::ControlRequest control;
  control.mutable_create_snapshot()->set_diff(diff);
  control.mutable_create_snapshot()->set_state_path(jailed ? jail_state : snapshot.state_path());
  control.mutable_create_snapshot()->set_memory_path(jailed ? jail_memory
                                                            : snapshot.memory_path());
  // ember-vmm writes into the directory; emberd's record (snapshot.json and the VM's
  // config, which a restore needs) always lives under the state directory.
  for (const std::string& d : {dir, record_dir}) {
    std::error_code error;
    std::filesystem::create_directories(d, error);
    if (error) {
      return unreserve(absl::InternalError("cannot create snapshot directory " + d + ": " +
                                           error.message()));
    }
  }
  absl::StatusOr<v1::ControlResponse> response = Call(*entry, control, Wait::kWhileConnected);
  // Without an answer ember-vmm may still be writing the files, unless it has ended.
  const bool vmm_done = response.ok() || WaitForExit(*entry, std::chrono::seconds(5));
  if (response.ok() && response->code() != 0) {
    response = absl::Status(static_cast<absl::StatusCode>(response->code()),
                            "VM \"" + request.vm_id() + "\": " + response->message());
  }
  if (response.ok() && jailed) {
    absl::Status moved =
        FinishJailedSnapshot(*entry, record_dir, diff, jail_state, jail_memory, snapshot);
    if (!moved.ok()) response = moved;
  }
  if (!response.ok() && !vmm_done) {
    EMBER_LOG(kWarn) << "emberd: VM " << request.vm_id() << ": snapshot "
                     << snapshot.snapshot_id() << " failed while ember-vmm may still write it; "
                     << "its files are left in " << dir;
    return unreserve(absl::Status(response.status().code(),
                                  std::string(response.status().message()) +
                                      " (the snapshot's files are left in " + dir +
                                      ": ember-vmm may still be writing them)"));
  }
  if (!response.ok()) {
    (void)RemoveTree(record_dir);
    if (dir != record_dir) RemoveFailedSnapshotFiles(dir);
    if (jailed) {
      ::unlink((JailRoot(request.vm_id()) + jail_state).c_str());
      ::unlink((JailRoot(request.vm_id()) + jail_memory).c_str());
    }
    return unreserve(response.status());
  }
  snapshot.set_create_duration_us(response->snapshot().duration_us());
  if (auto status = catalog_->Commit(snapshot, config); !status.ok()) return unreserve(status);
  EMBER_LOG(kInfo) << "emberd: VM " << request.vm_id() << ": snapshot " << snapshot.snapshot_id()
                   << " written in " << snapshot.create_duration_us() << " us";
  {
    // Like ember-vmm's chain: a full snapshot starts it afresh, a diff extends it.
    std::lock_guard lock(entry->mu);
    entry->last_snapshot_id = snapshot.snapshot_id();
  }
  return snapshot;
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

absl::Status VmManager::FinishJailedSnapshot(Entry& entry, const std::string& record_dir,
                                              bool diff, const std::string& jail_state,
                                              const std::string& jail_memory,
                                              const v1::Snapshot& snapshot) {
  std::string root = JailRoot(snapshot.vm_id());
  EMBER_RETURN_IF_ERROR(MoveOutOfJail(root + jail_state, snapshot.state_path(),
                                      options_.jail_uid, options_.jail_gid));
  EMBER_RETURN_IF_ERROR(MoveOutOfJail(root + jail_memory, snapshot.memory_path(),
                                      options_.jail_uid, options_.jail_gid));
  // Like ember-vmm's own chain: a full snapshot starts it afresh, a diff extends it.
  std::lock_guard lock(entry.mu);
  JailChain bases = diff ? entry.jail_chain : JailChain();
  EMBER_RETURN_IF_ERROR(WriteJailChain(record_dir + "/" + kJailBasesFile, bases));
  bases.emplace_back(jail_memory.substr(1), snapshot.memory_path());
  EMBER_RETURN_IF_ERROR(WriteJailChain(VmDir(snapshot.vm_id()) + "/" + kJailChainFile, bases));
  entry.jail_chain = std::move(bases);
  return absl::OkStatus();
}

absl::Status VmManager::PlanJailedRestore(const v1::RestoreRequest& request,
                                          const std::string& record_dir, bool diff,
                                          RestorePlan* plan) {
  const std::string field = request.snapshot_id().empty() ? "memory_path" : "snapshot_id";
  std::string bases_file = record_dir + "/" + kJailBasesFile;
  if (::access(bases_file.c_str(), F_OK) == 0) {
    EMBER_ASSIGN_OR_RETURN(plan->jail_bases, ReadJailChain(bases_file));
  } else if (diff) {
    return absl::FailedPreconditionError(
        field + ": snapshot \"" + request.snapshot_id() +
        "\" is a DIFF snapshot taken without --jailer: its state file names its base memory "
        "files by host paths, which a jail cannot see; fold it into a full snapshot "
        "(ember-snapshot merge) and restore that");
  }
  // The snapshot's own name where emberd has one, so the clone's later diffs name it so too.
  plan->jail_memory_name =
      request.snapshot_id().empty() ? "snapshot.mem" : request.snapshot_id() + ".mem";
  auto taken = [&] {
    return std::any_of(plan->jail_bases.begin(), plan->jail_bases.end(),
                       [&](const auto& base) { return base.first == plan->jail_memory_name; });
  };
  for (int n = 1; taken(); ++n) plan->jail_memory_name = "snapshot-" + std::to_string(n) + ".mem";
  EMBER_RETURN_IF_ERROR(CheckJailCanMap(field, plan->memory_path, options_.jail_dir,
                                        options_.jail_uid, options_.jail_gid));
  for (const auto& [name, host] : plan->jail_bases) {
    if (::access(host.c_str(), R_OK) != 0) {
      return absl::NotFoundError(field + ": cannot read " + host + ", a base of this diff "
                                 "snapshot: " + std::strerror(errno));
    }
    EMBER_RETURN_IF_ERROR(
        CheckJailCanMap(field, host, options_.jail_dir, options_.jail_uid, options_.jail_gid));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::RestoreResponse> VmManager::Restore(const v1::RestoreRequest& request) {
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
  // Where the snapshot is, and the configuration of the VM it was taken from (emberd's
  // record; a state_path emberd did not write may have none, and then the clones' records
  // carry only the overrides: ember-vmm itself uses the configuration in the state file).
  RestorePlan plan;
  std::string record_dir;
  bool diff = false;
  if (!request.snapshot_id().empty()) {
    EMBER_ASSIGN_OR_RETURN(v1::Snapshot snapshot, catalog_->Get(request.snapshot_id()));
    diff = snapshot.type() == v1::CreateSnapshotRequest::DIFF;
    plan.state_path = snapshot.state_path();
    plan.memory_path = snapshot.memory_path();
    plan.restored_from = request.snapshot_id();
    plan.snapshot_id = request.snapshot_id();
    record_dir = catalog_->RecordDir(request.snapshot_id());
  } else {
    plan.state_path = request.state_path();
    record_dir = std::filesystem::path(request.state_path()).parent_path().string();
    plan.memory_path =
        request.memory_path().empty() ? record_dir + "/memory" : request.memory_path();
    plan.restored_from = request.state_path();
    // One of emberd's own snapshots, restored by its path: the clones' DIFF snapshots
    // apply onto it all the same.
    plan.snapshot_id = catalog_->FindByFiles(plan.state_path, plan.memory_path);
  }
  // DeleteSnapshot refuses while this restore may still open the snapshot's files.
  if (!plan.snapshot_id.empty()) EMBER_RETURN_IF_ERROR(catalog_->BeginRestore(plan.snapshot_id));
  struct RestoreDone {
    SnapshotCatalog* catalog;
    std::string id;
    ~RestoreDone() {
      if (!id.empty()) catalog->EndRestore(id);
    }
  } restore_done{catalog_.get(), plan.snapshot_id};
  plan.uffd = request.memory_backend() == v1::RestoreRequest::UFFD;
  plan.prefetch = request.prefetch_working_set();
  if (plan.uffd && !options_.jail_dir.empty()) {
    return absl::FailedPreconditionError(
        "memory_backend: UFFD is not supported with emberd --jailer (a jailed ember-vmm has "
        "neither CAP_SYS_PTRACE nor /dev/userfaultfd, which userfaultfd needs); use FILE");
  }
  if (plan.uffd && diff) {
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
  for (const std::string& path : {plan.state_path, plan.memory_path}) {
    if (::access(path.c_str(), R_OK) != 0) {
      return absl::NotFoundError(
          std::string(request.snapshot_id().empty() ? "state_path" : "snapshot_id") +
          ": cannot read " + path + ": " + std::strerror(errno));
    }
  }
  const bool jailed = !options_.jail_dir.empty();
  if (jailed) EMBER_RETURN_IF_ERROR(PlanJailedRestore(request, record_dir, diff, &plan));
  v1::VmConfig base_config;
  bool config_known = ReadMessageJson(record_dir + "/vm_config.json", &base_config).ok();
  if (!config_known) base_config.Clear();

  std::vector<v1::Vm> clones;
  auto rollback = [&](absl::Status status) {
    for (const v1::Vm& clone : clones) (void)Delete(clone.vm_id(), /*force=*/true);
    return status;
  };
  for (std::uint32_t i = 0; i < count; ++i) {
    plan.overrides = i < static_cast<std::uint32_t>(request.overrides_size())
                         ? request.overrides(static_cast<int>(i))
                         : v1::RestoreOverrides();
    if (jailed && !plan.overrides.vsock_uds_path().empty()) {
      return rollback(absl::FailedPreconditionError(
          "overrides[" + std::to_string(i) + "].vsock_uds_path: not supported with emberd "
          "--jailer (a jailed ember-vmm sees only its chroot; leave it empty)"));
    }
    v1::VmConfig config = base_config;
    if (auto status = ApplyOverrides(plan.overrides, "overrides[" + std::to_string(i) + "]",
                                     config_known, &config);
        !status.ok()) {
      return rollback(status);
    }
    absl::StatusOr<v1::Vm> vm =
        SpawnVm(request.vm_id_prefix() + "-" + std::to_string(i), config, &plan);
    if (!vm.ok()) return rollback(vm.status());
    clones.push_back(*vm);
  }
  if (request.resume()) {
    for (v1::Vm& clone : clones) {
      absl::StatusOr<v1::Vm> resumed = Resume(clone.vm_id());
      if (!resumed.ok()) return rollback(resumed.status());
      clone = *resumed;
    }
  }
  v1::RestoreResponse response;
  for (v1::Vm& clone : clones) *response.add_vms() = std::move(clone);
  return response;
}

absl::StatusOr<std::pair<std::string, bool>> VmManager::Console(const std::string& vm_id) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(vm_id));
  std::lock_guard lock(entry->mu);
  return std::make_pair(VmDir(vm_id) + "/console.log", entry->vm.state() == v1::Vm::STOPPED);
}

absl::Status VmManager::Recover() {
  std::string vms_dir = options_.state_dir + "/vms";
  std::error_code error;
  std::vector<std::shared_ptr<Entry>> running;
  for (auto it = std::filesystem::directory_iterator(vms_dir, error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    std::string dir = it->path().string();
    auto entry = std::make_shared<Entry>();
    if (auto status = ReadMessageJson(dir + "/vm.json", &entry->vm); !status.ok()) {
      EMBER_LOG(kWarn) << "emberd: skipping " << dir << ": " << status.message();
      continue;
    }
    if (::access((dir + "/" + kJailChainFile).c_str(), F_OK) == 0) {
      absl::StatusOr<JailChain> chain = ReadJailChain(dir + "/" + kJailChainFile);
      if (chain.ok()) {
        entry->jail_chain = std::move(*chain);
      } else {
        // Only its next diff snapshot needs it, and ember-vmm refuses one without a base.
        EMBER_LOG(kWarn) << "emberd: " << chain.status().message();
      }
    }
    {
      std::lock_guard lock(mu_);
      vms_[entry->vm.vm_id()] = entry;
    }
    if (entry->vm.state() != v1::Vm::STOPPED) running.push_back(entry);
  }
  if (error) return absl::InternalError("cannot list " + vms_dir + ": " + error.message());
  catalog_->Load();
  {
    std::lock_guard lock(mu_);
    for (auto& [vm_id, entry] : vms_) {
      std::lock_guard vm_lock(entry->mu);
      entry->last_snapshot_id = catalog_->NextDiffBase(vm_id, entry->vm.created_unix_ms(),
                                                       entry->vm.restored_from());
    }
  }
  // Re-attach: a live ember-vmm still holds its listening control socket and answers HELLO.
  for (auto& entry : running) {
    const std::string& id = entry->vm.vm_id();
    absl::Status status = Attach(entry, 0, false);
    std::unique_lock lock(entry->mu);
    if (status.ok() &&
        entry->cv.wait_for(lock, std::chrono::seconds(5), [&] { return entry->hello; })) {
      entry->pidfd = PidfdOpen(entry->vm.pid());
      if (entry->pidfd) {
        WatchFd(entry->pidfd.Get(), entry, true);
        EMBER_LOG(kInfo) << "emberd: re-attached VM " << id << " (pid " << entry->vm.pid()
                         << ", " << StateName(entry->vm.state()) << ")";
        continue;
      }
    }
    if (entry->control) {
      UnwatchFd(entry->control.Get());
      entry->control.Reset();
    }
    *entry->vm.mutable_exit() = RecordedExit(
        options_.jail_dir.empty() ? VmDir(id) + "/exit" : JailRoot(id) + "/exit");
    entry->vm.set_pid(0);
    SetState(*entry, v1::Vm::STOPPED);
    EMBER_LOG(kInfo) << "emberd: VM " << id << " is gone: marked STOPPED";
  }
  return absl::OkStatus();
}

}  // namespace ember::emberd
