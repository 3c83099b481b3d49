#include "vmm/emberd/vmm_pool.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include "vmm/base/fd_passing.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/control/frame.h"
#include "vmm/control/pool_launch.h"
#include "vmm/emberd/store.h"
#include "vmm/emberd/unix_socket.h"
#include "vmm/emberd/vmm_view.h"

namespace ember::emberd {
namespace {

// After a slot could not be started, the refill thread tries again this much later.
constexpr int kRetryMs = 1000;
// How long a slot's leftover cgroup may take to empty (its processes killed) before it is
// given up on and logged.
constexpr auto kCgroupDeadline = std::chrono::seconds(5);

// Whether a slot can serve `spec` (see VmmPool's comment), and which kind.
std::optional<std::size_t> KindFor(const LaunchSpec& spec, bool jailed) {
  if (!spec.netns_path.empty() || spec.jailer_args.empty() != !jailed ||
      (!jailed && !spec.jail_files.empty())) {
    return std::nullopt;
  }
  // Jailed, the files go into the jail; unjailed, they go with the launch message.
  if (!jailed && spec.files.size() + control::kPoolLaunchFixedFds > base::kMaxPassedFds) {
    return std::nullopt;
  }
  const bool grouped = std::find(spec.jailer_args.begin(), spec.jailer_args.end(),
                                 "--supplementary-gid") != spec.jailer_args.end();
  return grouped ? 1 : 0;
}

void KillAndReapPid(int pidfd) {
  ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
  siginfo_t info{};
  while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED) < 0 &&
         errno == EINTR) {
  }
}

// How long the refill thread waits for a jailed slot's stand-in to fork its ember-vmm.
constexpr auto kVmmForkDeadline = std::chrono::seconds(2);

// A pidfd of the one child of `stand_in` (a jailed slot's ember-vmm) once it has forked it;
// empty if it has not within kVmmForkDeadline (the jailer failed: the stand-in ends).
base::UniqueFd ChildPidfd(pid_t stand_in) {
  const std::string path =
      "/proc/" + std::to_string(stand_in) + "/task/" + std::to_string(stand_in) + "/children";
  const auto deadline = std::chrono::steady_clock::now() + kVmmForkDeadline;
  while (std::chrono::steady_clock::now() < deadline) {
    absl::StatusOr<std::string> children = ReadFile(path);
    if (!children.ok()) return base::UniqueFd();
    const long child = std::strtol(children->c_str(), nullptr, 10);
    if (child > 0) return base::UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, child, 0)));
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return base::UniqueFd();
}

// `args` with --uid and --gid (flag and value pairs) set to `id`.
std::vector<std::string> WithIdentity(std::vector<std::string> args, std::uint32_t id) {
  for (std::size_t i = 0; i + 1 < args.size(); i += 2) {
    if (args[i] == "--uid" || args[i] == "--gid") args[i + 1] = std::to_string(id);
  }
  return args;
}

// The --resource-limit fsize=N of a jailed launch's options, which a slot sets on itself
// (control::PoolLaunch::file_size_limit); 0 without one.
std::uint64_t FileSizeLimit(const LaunchSpec& spec) {
  constexpr std::string_view kPrefix = "fsize=";
  for (std::size_t i = 0; i + 1 < spec.jailer_args.size(); i += 2) {
    const std::string& value = spec.jailer_args[i + 1];
    if (spec.jailer_args[i] != "--resource-limit" || !value.starts_with(kPrefix)) continue;
    return std::strtoull(value.c_str() + kPrefix.size(), nullptr, 10);
  }
  return 0;
}

// A copy of `spec` for a claim or a spawn after one: its files dup'd (close-on-exec).
absl::StatusOr<LaunchSpec> CopySpec(const LaunchSpec& spec) {
  LaunchSpec copy;
  copy.vm_id = spec.vm_id;
  copy.vm_dir = spec.vm_dir;
  copy.vmm_args = spec.vmm_args;
  copy.control_listen_fd = spec.control_listen_fd;
  copy.stderr_fd = spec.stderr_fd;
  copy.jail_files = spec.jail_files;
  copy.jailer_args = spec.jailer_args;
  copy.netns_path = spec.netns_path;
  for (const base::UniqueFd& file : spec.files) {
    base::UniqueFd dup(::fcntl(file.Get(), F_DUPFD_CLOEXEC, 0));
    if (!dup) return base::ErrnoError("fcntl(F_DUPFD_CLOEXEC)", "VM \"" + spec.vm_id + "\"");
    copy.files.push_back(std::move(dup));
  }
  return copy;
}

// Each slot cgroup's directory under `jail`'s hierarchies (<mount>/<parent>/_pool).
std::vector<std::string> PoolCgroupDirs(const JailerConfig& jail) {
  std::vector<std::string> dirs;
  for (const std::string& mount : jail.cgroups.mounts) {
    dirs.push_back(mount + "/" + jail.cgroups.parent + "/" + kPoolJailDir);
  }
  return dirs;
}

// Removes the cgroup `dir`, killing what is left in it, until `deadline`; false if it stays.
bool KillAndRemoveCgroup(const std::string& dir,
                         std::chrono::steady_clock::time_point deadline) {
  while (true) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return true;
    if (errno != EBUSY || std::chrono::steady_clock::now() > deadline) return false;
    // A process on its way in may not be listed yet: kill what is, and look again.
    absl::StatusOr<std::string> procs = ReadFile(dir + "/cgroup.procs");
    const char* at = procs.ok() ? procs->c_str() : "";
    for (char* end = nullptr;; at = end) {
      const long pid = std::strtol(at, &end, 10);
      if (end == at) break;
      ::kill(static_cast<pid_t>(pid), SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<VmmPool>> VmmPool::Create(std::unique_ptr<VmmLauncher> spawner,
                                                         std::string dir, std::size_t size,
                                                         std::optional<Jail> jail) {
  if (jail && !jail->config.ids.leases) {
    return absl::InvalidArgumentError("a jailed VMM pool needs the jail ids' shared leases");
  }
  if (jail) RemoveLeftovers(jail->config);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return base::ErrnoError("mkdir", dir);
  std::unique_ptr<VmmPool> pool(
      new VmmPool(std::move(spawner), std::move(dir), size, std::move(jail)));
  const std::string log = pool->dir_ + "/slots.log";
  pool->log_.Reset(::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!pool->log_) return base::ErrnoError("open", log);
  pool->wake_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!pool->wake_) return base::ErrnoError("eventfd", "VMM pool");
  return pool;
}

void VmmPool::Start() {
  if (size_ > 0 && !thread_.joinable()) thread_ = std::thread([this] { Refill(); });
}

void VmmPool::RemoveLeftovers(const JailerConfig& jail) {
  const auto deadline = std::chrono::steady_clock::now() + kCgroupDeadline;
  for (const std::string& pool_dir : PoolCgroupDirs(jail)) {
    std::error_code error;
    for (auto it = std::filesystem::directory_iterator(pool_dir, error);
         !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
      if (!it->is_directory()) continue;
      if (!KillAndRemoveCgroup(it->path().string(), deadline)) {
        EMBER_LOG(kWarn) << "emberd: VMM pool: cannot remove an earlier slot's cgroup "
                         << it->path().string() << ": " << std::strerror(errno);
      }
    }
  }
  const std::string jails = jail.chroot_base + "/" + kPoolJailDir;
  if (absl::Status removed = RemoveTree(jails); !removed.ok()) {
    EMBER_LOG(kWarn) << "emberd: VMM pool: " << removed.message();
  }
}

VmmPool::~VmmPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  Wake();
  if (thread_.joinable()) thread_.join();
  std::vector<std::string> names;
  {
    std::lock_guard lock(mu_);
    for (std::deque<Slot>& idle : idle_) {
      for (const Slot& slot : idle) names.push_back(slot.name);
      idle.clear();  // closes their connections: a slot not killed first exits on its own
    }
    for (auto& [pid, tracked] : tracked_) {
      if (tracked.state != SlotState::kTaken) KillAndReap(tracked);
    }
    tracked_.clear();
  }
  if (jail_) {
    for (const std::string& name : names) RemoveSlotJail(name);
  }
}

void VmmPool::KillAndReap(const Tracked& tracked) {
  if (tracked.vmm_pidfd) {
    ::syscall(SYS_pidfd_send_signal, tracked.vmm_pidfd.Get(), SIGKILL, nullptr, 0);
  }
  KillAndReapPid(tracked.pidfd.Get());
  if (!tracked.vmm_pidfd) return;
  // ECHILD when the stand-in reaped it (the usual case).
  siginfo_t info{};
  while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(tracked.vmm_pidfd.Get()),
                  &info, WEXITED) < 0 &&
         errno == EINTR) {
  }
}

void VmmPool::Wake() {
  const std::uint64_t one = 1;
  (void)!::write(wake_.Get(), &one, sizeof(one));
}

absl::StatusOr<pid_t> VmmPool::Launch(const LaunchSpec& spec) {
  const std::optional<std::size_t> kind = KindFor(spec, jail_.has_value());
  Slot slot;
  int pidfd = -1;
  {
    std::lock_guard lock(mu_);
    if (!kind || idle_[*kind].empty()) {
      ++misses_;
    } else {
      slot = std::move(idle_[*kind].front());
      idle_[*kind].pop_front();
      Tracked& tracked = tracked_[slot.pid];
      tracked.state = SlotState::kSending;
      pidfd = tracked.pidfd.Get();
    }
  }
  if (slot.pid == 0) return spawner_->Launch(spec);
  // Jailed, the VM's jail comes from the slot's, with the slot's uid.
  std::optional<LaunchSpec> claimed;
  if (jail_) {
    absl::StatusOr<LaunchSpec> copy = CopySpec(spec);
    if (!copy.ok()) return copy.status();
    copy->jailer_args = WithIdentity(std::move(copy->jailer_args), slot.uid);
    absl::Status status = Claim(slot, pidfd, *copy);
    if (absl::IsAlreadyExists(status)) {
      // A relaunch: its jail is there already. The slot is as it was: back to the pool.
      std::lock_guard lock(mu_);
      tracked_[slot.pid].state = SlotState::kIdle;
      idle_[*kind].push_front(std::move(slot));
      ++misses_;
      return spawner_->Launch(spec);
    }
    if (status.ok()) {
      claimed = std::move(*copy);
    } else {
      EMBER_LOG(kWarn) << "emberd: VMM pool: slot " << slot.name << " could not become VM "
                       << spec.vm_id << "'s jail (" << status.message() << "); spawning one";
    }
  }
  Wake();  // refill
  absl::Status sent = jail_ && !claimed ? absl::AbortedError("not claimed") : SendLaunch(slot, spec);
  {
    std::lock_guard lock(mu_);
    if (sent.ok()) {
      // From here the VM's supervisor reaps it, not the pool.
      tracked_[slot.pid].state = SlotState::kTaken;
      ++hits_;
      return slot.pid;
    }
    if (!jail_ || claimed) {
      // A slot that died idle (and was not reaped yet) cannot take it; an exec'd VMM will.
      EMBER_LOG(kWarn) << "emberd: VMM pool: slot pid " << slot.pid << " did not take VM "
                       << spec.vm_id << "'s launch (" << sent.message() << "); spawning one";
    }
    // Still kSending: the refill thread neither closes nor reaps it.
    ++misses_;
  }
  // The fds may have gone out before the rest timed out: the slot then holds copies of the
  // VM's control listener and files. Gone before the exec'd VMM serves them, so that no
  // process emberd does not supervise accepts the VM's control connection or keeps its drives.
  {
    std::unique_lock lock(mu_);
    const Tracked& tracked = tracked_[slot.pid];
    lock.unlock();  // kSending: nobody else touches it
    KillAndReap(tracked);
    lock.lock();
    tracked_[slot.pid].state = SlotState::kDiscard;
  }
  Wake();
  if (!jail_) return spawner_->Launch(spec);
  // What the claim did not make the VM's is the slot's leftover; a jail it renamed is the VM's
  // now and the spawned jailer builds on it, as the VM's uid.
  RemoveSlotJail(slot.name);
  if (claimed) return spawner_->Launch(*claimed);
  return spawner_->Launch(spec);
}

absl::Status VmmPool::Claim(const Slot& slot, int pidfd, const LaunchSpec& spec) {
  EMBER_RETURN_IF_ERROR(spawner_->ClaimSlot(slot.name, pidfd, spec));
  // The VM runs as the slot's uid from here; the id its view leased for it is freed (nothing
  // was made with it).
  JailIdLeases& leases = *jail_->config.ids.leases;
  EMBER_RETURN_IF_ERROR(leases.Transfer(PoolSlotHolder(slot.name), spec.vm_id).status());
  return RecordJailId(spec.vm_dir, slot.uid);
}

void VmmPool::RemoveSlotJail(const std::string& name) {
  const JailerConfig& jail = jail_->config;
  const std::string root = jail.PoolJailRoot(jail_->vmm_binary, name);
  if (absl::Status removed = RemoveTree(std::filesystem::path(root).parent_path().string());
      !removed.ok()) {
    EMBER_LOG(kWarn) << "emberd: VMM pool: " << removed.message();
  }
  const auto deadline = std::chrono::steady_clock::now() + kCgroupDeadline;
  bool gone = true;
  for (const std::string& pool_dir : PoolCgroupDirs(jail)) {
    if (!KillAndRemoveCgroup(pool_dir + "/" + name, deadline)) {
      gone = false;
      EMBER_LOG(kWarn) << "emberd: VMM pool: slot " << name << "'s cgroup in " << pool_dir
                       << " is still there: " << std::strerror(errno);
    }
  }
  // Its uid is free only once nothing of it is left (a process kept in its cgroup keeps it).
  if (gone) jail.ids.leases->Release(PoolSlotHolder(name));
}

absl::Status VmmPool::SendLaunch(const Slot& slot, const LaunchSpec& spec) {
  EMBER_ASSIGN_OR_RETURN(std::string frame,
                         control::EncodePoolLaunch({spec.vmm_args, FileSizeLimit(spec)}));
  std::vector<int> fds = {spec.control_listen_fd, spec.stderr_fd};
  // A jailed VMM finds its files in its jail (ClaimSlot put them there).
  if (!jail_) {
    for (const base::UniqueFd& file : spec.files) fds.push_back(file.Get());
  }
  EMBER_ASSIGN_OR_RETURN(std::size_t sent, base::SendWithFds(slot.conn.Get(), frame, fds));
  return control::WriteAll(slot.conn.Get(), std::string_view(frame).substr(sent), 1000);
}

absl::StatusOr<VmmPool::Slot> VmmPool::SpawnSlot(Kind kind) {
  Slot slot;
  // Unique among this emberd's slots and those an earlier one left (named by its pid).
  slot.name = std::to_string(::getpid()) + "-" + std::to_string(next_slot_++);
  // A socket only emberd connects to: made, connected to and unlinked here, in emberd's 0700
  // directory, before the slot exists.
  const std::string path = dir_ + "/slot-" + slot.name + ".sock";
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd listener, ListenUnix(path));
  absl::StatusOr<base::UniqueFd> conn = ConnectUnix(path);
  ::unlink(path.c_str());
  if (!conn.ok()) return conn.status();
  slot.conn = std::move(*conn);
  LaunchSpec spec;
  spec.vm_id = slot.name;
  spec.vm_dir = dir_;
  spec.vmm_args = {"--pool-slot"};
  spec.control_listen_fd = listener.Get();
  spec.stderr_fd = log_.Get();
  spec.pool_slot = true;
  if (jail_) {
    EMBER_ASSIGN_OR_RETURN(slot.uid, jail_->config.ids.leases->Take(PoolSlotHolder(slot.name)));
    spec.jailer_args = IdleSlotJailerOptions(jail_->config.cgroups);
    const std::string id = std::to_string(slot.uid);
    spec.jailer_args.insert(spec.jailer_args.end(), {"--uid", id, "--gid", id});
    if (kind == kRestore) {
      spec.jailer_args.insert(spec.jailer_args.end(),
                              {"--supplementary-gid",
                               std::to_string(jail_->config.ids.snapshot_gid())});
    }
  }
  absl::StatusOr<pid_t> pid = spawner_->Launch(spec);
  if (!pid.ok()) {
    if (jail_) RemoveSlotJail(slot.name);
    return pid.status();
  }
  slot.pid = *pid;
  base::UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, slot.pid, 0)));
  if (!pidfd) {
    absl::Status status =
        base::ErrnoError("pidfd_open", "VMM pool slot pid " + std::to_string(slot.pid));
    ::kill(slot.pid, SIGKILL);
    return status;
  }
  base::UniqueFd vmm_pidfd;
  if (jail_) vmm_pidfd = ChildPidfd(slot.pid);
  std::lock_guard lock(mu_);
  tracked_[slot.pid] = Tracked{std::move(pidfd), SlotState::kIdle, std::move(vmm_pidfd)};
  return slot;
}

void VmmPool::Refill() {
  const std::size_t kinds = KindCount();
  for (;;) {
    std::vector<pollfd> polled;
    std::vector<pid_t> pids;
    std::optional<Kind> need;
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      for (auto it = tracked_.begin(); it != tracked_.end();) {
        const SlotState state = it->second.state;
        // A taken slot is its VM's now: its pidfd is only closed (its supervisor has its own).
        // A discarded one was killed and reaped by Launch.
        if (state == SlotState::kTaken || state == SlotState::kDiscard) {
          it = tracked_.erase(it);
          continue;
        }
        if (state == SlotState::kIdle) {
          polled.push_back({it->second.pidfd.Get(), POLLIN, 0});
          pids.push_back(it->first);
        }
        ++it;
      }
      for (std::size_t kind = 0; kind < kinds && !need; ++kind) {
        if (idle_[kind].size() < size_) need = static_cast<Kind>(kind);
      }
    }
    int timeout = -1;
    if (need) {
      absl::StatusOr<Slot> slot = SpawnSlot(*need);
      if (slot.ok()) {
        std::lock_guard lock(mu_);
        idle_[*need].push_back(std::move(*slot));
        changed_.notify_all();
        continue;
      }
      EMBER_LOG(kWarn) << "emberd: VMM pool: cannot start a slot: " << slot.status().message();
      timeout = kRetryMs;
    }
    polled.push_back({wake_.Get(), POLLIN, 0});
    if (::poll(polled.data(), polled.size(), timeout) < 0 && errno != EINTR) {
      EMBER_LOG(kError) << "emberd: VMM pool: poll: " << std::strerror(errno);
      return;
    }
    std::uint64_t count;
    (void)!::read(wake_.Get(), &count, sizeof(count));
    for (std::size_t i = 0; i < pids.size(); ++i) {
      if ((polled[i].revents & POLLIN) == 0) continue;
      // A slot ended while idle: forget it (the next round starts another).
      std::string name;
      {
        std::lock_guard lock(mu_);
        auto it = tracked_.find(pids[i]);
        if (it == tracked_.end() || it->second.state != SlotState::kIdle) continue;
        for (std::deque<Slot>& idle : idle_) {
          for (auto slot = idle.begin(); slot != idle.end(); ++slot) {
            if (slot->pid != pids[i]) continue;
            name = slot->name;
            idle.erase(slot);
            break;
          }
        }
        KillAndReap(it->second);
        tracked_.erase(it);
      }
      if (jail_) RemoveSlotJail(name);
      EMBER_LOG(kWarn) << "emberd: VMM pool: idle slot pid " << pids[i]
                       << " ended (see slots.log); starting another";
    }
  }
}

std::vector<pid_t> VmmPool::IdlePids() {
  std::lock_guard lock(mu_);
  std::vector<pid_t> pids;
  for (const std::deque<Slot>& idle : idle_) {
    for (const Slot& slot : idle) pids.push_back(slot.pid);
  }
  return pids;
}

bool VmmPool::WaitFull(std::chrono::milliseconds timeout) {
  const std::size_t kinds = KindCount();
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [&] {
    for (std::size_t kind = 0; kind < kinds; ++kind) {
      if (idle_[kind].size() < size_) return false;
    }
    return true;
  });
}

}  // namespace ember::emberd
