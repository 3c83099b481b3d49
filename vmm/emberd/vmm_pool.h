#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"
#include "vmm/emberd/launcher.h"

namespace ember::emberd {

// VMMs ready before they are asked for (emberd --vmm-pool N, issue 18). The pool keeps N
// ember-vmm processes started through `spawner` (the fork server) as --pool-slot: each has
// exec'd, compiled its seccomp filters, opened /dev/kvm and created its VM with TSS, irqchip
// and PIT (vmm/pool_slot.h), and waits on a connection only emberd holds. Launch hands the
// first idle one the VM's arguments and fds (control/pool_launch.h), exactly what an exec'd
// VMM would have got, and returns its pid; a thread refills the pool in the background and
// replaces a slot that dies while idle (reaping it).
//
// What it does not change: a slot serves one VM once (it becomes that VM's VMM and is never
// handed back); until its launch it holds no file of any VM; its seccomp filters are the ones
// an exec'd VMM compiles. Launches it cannot serve go to `spawner` as before: a jailed launch
// (a jail is its VM's own: its uid, chroot and cgroup are named after the VM, which a slot does
// not know yet), one into a clone network (the VMM must start in that namespace), one with more
// files than one message carries, and any launch while no slot is idle (no waiting: a burst
// gets what the pool has, then exec'd VMMs).
class VmmPool : public VmmLauncher {
 public:
  // `dir` (created 0700 if missing) holds each slot's socket until emberd has connected to it
  // (then unlinked) and the slots' log before their launch (slots.log). Starts the refill
  // thread: call after emberd's seccomp filter is installed, or before any other thread exists
  // (the filter goes to every thread at once). `size` 0 keeps no slot (every launch spawns).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<VmmPool>> Create(
      std::unique_ptr<VmmLauncher> spawner, std::string dir, std::size_t size);
  // Stops the refill thread and lets every idle slot go (kills and reaps it).
  ~VmmPool() override;

  // Any thread.
  [[nodiscard]] absl::StatusOr<pid_t> Launch(const LaunchSpec& spec) override;

  // The pids of the slots idle now (tests, benchmarks).
  [[nodiscard]] std::vector<pid_t> IdlePids();
  // Waits until `size` slots are idle; false after `timeout`.
  [[nodiscard]] bool WaitFull(std::chrono::milliseconds timeout);
  // Launches served by a slot, and those that had to spawn (no slot idle or not poolable).
  [[nodiscard]] std::uint64_t hits() const { return hits_; }
  [[nodiscard]] std::uint64_t misses() const { return misses_; }

 private:
  struct Slot {
    pid_t pid = 0;
    base::UniqueFd conn;  // emberd's end of the slot's one connection
  };
  VmmPool(std::unique_ptr<VmmLauncher> spawner, std::string dir, std::size_t size)
      : spawner_(std::move(spawner)), dir_(std::move(dir)), size_(size) {}
  // Starts one slot through the spawner; its pidfd goes into pidfds_.
  [[nodiscard]] absl::StatusOr<Slot> SpawnSlot();
  // Sends `spec` to `slot`; on failure the slot is to be discarded.
  [[nodiscard]] absl::Status SendLaunch(const Slot& slot, const LaunchSpec& spec);
  void Refill();  // the refill thread
  void Wake();

  std::unique_ptr<VmmLauncher> spawner_;
  const std::string dir_;
  const std::size_t size_;
  base::UniqueFd log_;   // the slots' stderr until their launch
  base::UniqueFd wake_;  // eventfd: a slot taken, or the pool stopping
  std::uint64_t next_slot_ = 0;  // refill thread only: names the slots' sockets

  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<Slot> idle_;  // guarded by mu_
  // Each live slot's pidfd, by pid, until the pool forgets the slot; guarded by mu_, and
  // closed only by the refill thread (it polls them).
  enum class SlotState {
    kIdle,     // in idle_: the refill thread reaps it if it ends
    kSending,  // Launch is sending it a launch: left alone
    kTaken,    // its VM's now: its pidfd is closed, the VM's supervisor reaps it
    kDiscard,  // did not take its launch: killed and reaped by Launch, to be forgotten
  };
  struct Tracked {
    base::UniqueFd pidfd;
    SlotState state = SlotState::kIdle;
  };
  std::map<pid_t, Tracked> tracked_;  // guarded by mu_
  bool stopping_ = false;             // guarded by mu_
  std::atomic<std::uint64_t> hits_{0};
  std::atomic<std::uint64_t> misses_{0};
  std::thread thread_;
};

}  // namespace ember::emberd
