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
  const ManagerOptions& o = manager->options_;
  manager->view_ = o.jail_dir.empty()
                       ? MakeDirectView(o.state_dir + "/vms")
                       : MakeJailedView(o.state_dir + "/vms", o.jail_dir, o.jail_uid, o.jail_gid);
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
    (void)view_->RemoveVm(vm_id);
    return status;
  };
  if (auto status = view_->CheckVmId(vm_id); !status.ok()) return fail(status);

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
  // With its console and its exit record: how the VM ended, for an emberd that was not
  // running then (Recover reads it).
  if (auto status = view_->PrepareLaunch(config, restore, &spec); !status.ok()) {
    return fail(status);
  }
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
  EMBER_RETURN_IF_ERROR(view_->RemoveVm(vm_id));
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
  }
  EMBER_RETURN_IF_ERROR(view_->CheckSnapshot(request.vm_id(), diff));
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
  const VmmView::SnapshotFiles target = view_->SnapshotTarget(snapshot);
  v1::ControlRequest control;
  control.mutable_create_snapshot()->set_diff(diff);
  control.mutable_create_snapshot()->set_state_path(target.state);
  control.mutable_create_snapshot()->set_memory_path(target.memory);
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
  if (response.ok()) {
    absl::Status moved = view_->FinishSnapshot(snapshot, record_dir);
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
    view_->AbandonSnapshot(snapshot);
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
  std::string& record_dir = plan.record_dir;
  bool& diff = plan.diff;
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
    const std::string beside = std::filesystem::path(request.state_path()).parent_path();
    plan.memory_path = request.memory_path().empty() ? beside + "/memory" : request.memory_path();
    plan.restored_from = request.state_path();
    // One of emberd's own snapshots, restored by its path: the clones' DIFF snapshots
    // apply onto it all the same.
    plan.snapshot_id = catalog_->FindByFiles(plan.state_path, plan.memory_path);
    // Only emberd's own record: what a file in the caller's directory says would decide
    // which host files a clone is given (its drives, a jail's links).
    if (!plan.snapshot_id.empty()) record_dir = catalog_->RecordDir(plan.snapshot_id);
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
  EMBER_RETURN_IF_ERROR(
      view_->PlanRestore(request.snapshot_id().empty() ? "memory_path" : "snapshot_id", &plan));
  v1::VmConfig base_config;
  bool config_known =
      !record_dir.empty() && ReadMessageJson(record_dir + "/vm_config.json", &base_config).ok();
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
    const std::string where = "overrides[" + std::to_string(i) + "]";
    v1::VmConfig config = base_config;
    if (auto status = view_->CheckOverrides(where, plan.overrides); !status.ok()) {
      return rollback(status);
    }
    if (auto status = ApplyOverrides(plan.overrides, where, config_known, &config);
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
    view_->LoadVm(entry->vm.vm_id());
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
    *entry->vm.mutable_exit() = RecordedExit(view_->ExitRecordPath(id));
    entry->vm.set_pid(0);
    SetState(*entry, v1::Vm::STOPPED);
    EMBER_LOG(kInfo) << "emberd: VM " << id << " is gone: marked STOPPED";
  }
  return absl::OkStatus();
}

}  // namespace ember::emberd
