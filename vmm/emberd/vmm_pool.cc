#include "vmm/emberd/vmm_pool.h"

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

#include "vmm/base/fd_passing.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/control/frame.h"
#include "vmm/control/pool_launch.h"
#include "vmm/emberd/unix_socket.h"

namespace ember::emberd {
namespace {

// After a slot could not be started, the refill thread tries again this much later.
constexpr int kRetryMs = 1000;

// Whether a slot can serve `spec` (see VmmPool's comment).
bool Poolable(const LaunchSpec& spec) {
  return spec.jail_files.empty() && spec.jailer_args.empty() && spec.netns_path.empty() &&
         spec.files.size() + control::kPoolLaunchFixedFds <= base::kMaxPassedFds;
}

void KillAndReap(int pidfd) {
  ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
  siginfo_t info{};
  while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED) < 0 &&
         errno == EINTR) {
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<VmmPool>> VmmPool::Create(std::unique_ptr<VmmLauncher> spawner,
                                                         std::string dir, std::size_t size) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return base::ErrnoError("mkdir", dir);
  std::unique_ptr<VmmPool> pool(new VmmPool(std::move(spawner), std::move(dir), size));
  const std::string log = pool->dir_ + "/slots.log";
  pool->log_.Reset(::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!pool->log_) return base::ErrnoError("open", log);
  pool->wake_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!pool->wake_) return base::ErrnoError("eventfd", "VMM pool");
  if (size > 0) pool->thread_ = std::thread([p = pool.get()] { p->Refill(); });
  return pool;
}

VmmPool::~VmmPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  Wake();
  if (thread_.joinable()) thread_.join();
  std::lock_guard lock(mu_);
  idle_.clear();  // closes their connections: a slot that is not killed first exits on its own
  for (auto& [pid, tracked] : tracked_) {
    if (tracked.state != SlotState::kTaken) KillAndReap(tracked.pidfd.Get());
  }
  tracked_.clear();
}

void VmmPool::Wake() {
  const std::uint64_t one = 1;
  (void)!::write(wake_.Get(), &one, sizeof(one));
}

absl::StatusOr<pid_t> VmmPool::Launch(const LaunchSpec& spec) {
  Slot slot;
  {
    std::lock_guard lock(mu_);
    if (!Poolable(spec) || idle_.empty()) {
      ++misses_;
    } else {
      slot = std::move(idle_.front());
      idle_.pop_front();
      tracked_[slot.pid].state = SlotState::kSending;
    }
  }
  if (slot.pid == 0) return spawner_->Launch(spec);
  Wake();  // refill
  absl::Status sent = SendLaunch(slot, spec);
  int pidfd = -1;
  {
    std::lock_guard lock(mu_);
    if (sent.ok()) {
      // From here the VM's supervisor reaps it, not the pool.
      tracked_[slot.pid].state = SlotState::kTaken;
      ++hits_;
      return slot.pid;
    }
    // A slot that died idle (and was not reaped yet) cannot take it; an exec'd VMM will.
    EMBER_LOG(kWarn) << "emberd: VMM pool: slot pid " << slot.pid << " did not take VM "
                     << spec.vm_id << "'s launch (" << sent.message() << "); spawning one";
    // Still kSending: the refill thread neither closes nor reaps it.
    pidfd = tracked_[slot.pid].pidfd.Get();
    ++misses_;
  }
  // The fds may have gone out before the rest timed out: the slot then holds copies of the
  // VM's control listener and files. Gone before the exec'd VMM serves them, so that no
  // process emberd does not supervise accepts the VM's control connection or keeps its drives.
  KillAndReap(pidfd);
  {
    std::lock_guard lock(mu_);
    tracked_[slot.pid].state = SlotState::kDiscard;
  }
  Wake();
  return spawner_->Launch(spec);
}

absl::Status VmmPool::SendLaunch(const Slot& slot, const LaunchSpec& spec) {
  EMBER_ASSIGN_OR_RETURN(std::string frame, control::EncodePoolLaunch(spec.vmm_args));
  std::vector<int> fds = {spec.control_listen_fd, spec.stderr_fd};
  for (const base::UniqueFd& file : spec.files) fds.push_back(file.Get());
  EMBER_ASSIGN_OR_RETURN(std::size_t sent, base::SendWithFds(slot.conn.Get(), frame, fds));
  return control::WriteAll(slot.conn.Get(), std::string_view(frame).substr(sent), 1000);
}

absl::StatusOr<VmmPool::Slot> VmmPool::SpawnSlot() {
  // A socket only emberd connects to: made, connected to and unlinked here, in emberd's 0700
  // directory, before the slot exists.
  const std::string path = dir_ + "/slot-" + std::to_string(next_slot_++) + ".sock";
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd listener, ListenUnix(path));
  absl::StatusOr<base::UniqueFd> conn = ConnectUnix(path);
  ::unlink(path.c_str());
  if (!conn.ok()) return conn.status();
  LaunchSpec spec;
  spec.vm_id = "pool-slot";  // unjailed: names nothing
  spec.vm_dir = dir_;
  spec.vmm_args = {"--pool-slot"};
  spec.control_listen_fd = listener.Get();
  spec.stderr_fd = log_.Get();
  EMBER_ASSIGN_OR_RETURN(pid_t pid, spawner_->Launch(spec));
  base::UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) {
    absl::Status status = base::ErrnoError("pidfd_open", "VMM pool slot pid " + std::to_string(pid));
    ::kill(pid, SIGKILL);
    return status;
  }
  std::lock_guard lock(mu_);
  tracked_[pid] = Tracked{std::move(pidfd), SlotState::kIdle};
  return Slot{pid, std::move(*conn)};
}

void VmmPool::Refill() {
  for (;;) {
    std::vector<pollfd> polled;
    std::vector<pid_t> pids;
    bool need = false;
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
      need = idle_.size() < size_;
    }
    int timeout = -1;
    if (need) {
      absl::StatusOr<Slot> slot = SpawnSlot();
      if (slot.ok()) {
        std::lock_guard lock(mu_);
        idle_.push_back(std::move(*slot));
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
      std::lock_guard lock(mu_);
      auto it = tracked_.find(pids[i]);
      if (it == tracked_.end() || it->second.state != SlotState::kIdle) continue;
      idle_.erase(std::remove_if(idle_.begin(), idle_.end(),
                                 [&](const Slot& slot) { return slot.pid == pids[i]; }),
                  idle_.end());
      KillAndReap(it->second.pidfd.Get());
      tracked_.erase(it);
      EMBER_LOG(kWarn) << "emberd: VMM pool: idle slot pid " << pids[i]
                       << " ended (see slots.log); starting another";
    }
  }
}

std::vector<pid_t> VmmPool::IdlePids() {
  std::lock_guard lock(mu_);
  std::vector<pid_t> pids;
  for (const Slot& slot : idle_) pids.push_back(slot.pid);
  return pids;
}

bool VmmPool::WaitFull(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [&] { return idle_.size() >= size_; });
}

}  // namespace ember::emberd
