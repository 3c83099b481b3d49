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
#include <optional>
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
// Jailed (emberd's default), each slot is started through ember-jailer in a jail of its own
// prepared ahead: a uid and gid leased from the VMs' range (JailIdLeases), its cgroup, its
// jail root, its namespaces, its dropped privileges, KVM's device node. Slots are named, and
// their jails and cgroups live apart from the VMs' (kPoolJailDir). A launch claims a slot
// (ForkServerLauncher::ClaimSlot): its jail directory is renamed to the VM's, its cgroup
// becomes the VM's, the VM takes over its uid (recorded in the VM's directory as any VM's),
// and only what depends on the VM is done then (its files, device nodes, rlimits, cgroup
// limits and taps): afterwards the VM's jail is what a spawned one would be, by the same names,
// so nothing else in emberd tells them apart. A booted VM's VMM has no supplementary group and
// a restored clone's has the snapshot group, fixed when the slot starts: the pool keeps `size`
// slots of each kind.
//
// What it does not change: a slot serves one VM once (it becomes that VM's VMM and is never
// handed back); until its launch it holds no file of any VM; its seccomp filters are the ones
// an exec'd VMM compiles. Launches it cannot serve go to `spawner` as before: one into a clone
// network (the VMM must start in that namespace), a jailed VM's relaunch (its jail exists),
// one with more files than one message carries, and any launch while no slot of its kind is
// idle (no waiting: a burst gets what the pool has, then exec'd VMMs).
class VmmPool : public VmmLauncher {
 public:
  // A jailed pool's settings: emberd's jail (its ids must carry the leases shared with the
  // jailed view) and the ember-vmm binary the jails are named after.
  struct Jail {
    JailerConfig config;
    std::string vmm_binary;
  };

  // `dir` (created 0700 if missing) holds each slot's socket until emberd has connected to it
  // (then unlinked) and the slots' log before their launch (slots.log). `size` 0 keeps no slot
  // (every launch spawns). With `jail`, its slots are jailed; what an earlier emberd's pool left
  // of its slots is removed first (RemoveLeftovers). No slot starts before Start.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<VmmPool>> Create(
      std::unique_ptr<VmmLauncher> spawner, std::string dir, std::size_t size,
      std::optional<Jail> jail = std::nullopt);
  // Starts the refill thread: call once the ids of the VMs on record are leased (after
  // VmManager::Recover), so that no slot takes one; and after emberd's seccomp filter is
  // installed, or before any other thread exists (the filter goes to every thread at once).
  void Start();
  // Stops the refill thread and lets every idle slot go (kills and reaps it, and removes its
  // jail, cgroup and uid lease).
  ~VmmPool() override;

  // Removes what an earlier emberd's jailed pool left (it was killed): its slots' processes
  // (killed through their cgroups), cgroups and jail directories. Their uids were leased only
  // in that emberd's memory. Called by Create, before the fork server's first slot; emberd
  // calls it also when it keeps no pool. Logs what it cannot remove.
  static void RemoveLeftovers(const JailerConfig& jail);

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
  // Jailed, a slot's supplementary groups: none (boots) or the snapshot group (restores).
  enum Kind : std::size_t { kBoot = 0, kRestore = 1, kKinds = 2 };
  struct Slot {
    pid_t pid = 0;
    base::UniqueFd conn;  // emberd's end of the slot's one connection
    std::string name;     // jailed: its jail's and cgroup's name
    std::uint32_t uid = 0;  // jailed: its uid and gid, leased as PoolSlotHolder(name)
  };
  VmmPool(std::unique_ptr<VmmLauncher> spawner, std::string dir, std::size_t size,
          std::optional<Jail> jail)
      : spawner_(std::move(spawner)), dir_(std::move(dir)), size_(size), jail_(std::move(jail)) {}
  // The kinds of slot kept: boot and restore jailed, one unjailed.
  [[nodiscard]] std::size_t KindCount() const { return jail_ ? std::size_t{kKinds} : 1; }
  // Starts one slot of `kind` through the spawner; its pidfd goes into tracked_.
  [[nodiscard]] absl::StatusOr<Slot> SpawnSlot(Kind kind);
  // Sends `spec` to `slot`; on failure the slot is to be discarded.
  [[nodiscard]] absl::Status SendLaunch(const Slot& slot, const LaunchSpec& spec);
  // Jailed: makes `slot` (taken from idle_) spec's VM's jail; the VM takes over its uid.
  // ALREADY_EXISTS leaves the slot as it was.
  [[nodiscard]] absl::Status Claim(const Slot& slot, int pidfd, const LaunchSpec& spec);
  // Jailed: removes what a slot that never became a VM's left (its jail directory, cgroup and
  // uid lease), once its processes are gone.
  void RemoveSlotJail(const std::string& name);
  void Refill();  // the refill thread
  void Wake();

  std::unique_ptr<VmmLauncher> spawner_;
  const std::string dir_;
  const std::size_t size_;  // per kind
  const std::optional<Jail> jail_;
  base::UniqueFd log_;   // the slots' stderr until their launch
  base::UniqueFd wake_;  // eventfd: a slot taken, or the pool stopping
  std::uint64_t next_slot_ = 0;  // refill thread only: names the slots' sockets

  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<Slot> idle_[kKinds];  // guarded by mu_ (unjailed: only kBoot's)
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
    // Jailed: the slot's ember-vmm under the jailer's stand-in (pid), which becomes emberd's
    // child (emberd is a subreaper) if the stand-in dies first and must then be reaped too.
    base::UniqueFd vmm_pidfd;
  };
  // Kills and reaps a slot that is not (or no longer) to serve a VM: its ember-vmm first, so
  // that the stand-in reaps it, then the stand-in, then the ember-vmm if it was left to emberd.
  static void KillAndReap(const Tracked& tracked);
  std::map<pid_t, Tracked> tracked_;  // guarded by mu_
  bool stopping_ = false;             // guarded by mu_
  std::atomic<std::uint64_t> hits_{0};
  std::atomic<std::uint64_t> misses_{0};
  std::thread thread_;
};

}  // namespace ember::emberd
