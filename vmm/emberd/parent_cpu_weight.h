#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "vmm/emberd/launcher.h"

namespace ember::emberd {

// The CPU weight of the cgroup that holds every jailed VM's own (JailCgroups::parent): the sum
// of its VMs' weights. Left at the default, the parent weighs one task's worth against its
// siblings (on cgroup v1 every task of the root cgroup, emberd's threads and its clients'
// among them; on v2 a sibling slice), and all VMs share that one share: 16 warm function
// clones of the busy-polling test guest served 5x fewer invocations jailed than unjailed
// (perf/fn_bench.py). Weighing as much as its VMs, the parent gives each of them what it would
// have unjailed; within it, each VM's own weight (JailedView) divides it. The sum is capped at
// one default weight per host CPU (Cap): the parent sits beside system.slice (emberd, sshd,
// journald) and user.slice, each weighing one default; uncapped, ~100 vCPUs of spinning guests
// left them ~1% of the CPU, and emberd's API, supervisor and kill paths crawled. Any thread.
class ParentCpuWeight {
 public:
  explicit ParentCpuWeight(JailCgroups cgroups) : cgroups_(std::move(cgroups)) {}

  // VM `vm_id` is launched (again) with these ember-jailer options (LaunchSpec::jailer_args):
  // its cpu weight (--cgroup cpu.weight=N or cpu.shares=N) counts from now on. The parent is
  // written if it exists (the first VM's jailer makes it: a lone one-vCPU VM's weight is the
  // default anyway).
  void Add(const std::string& vm_id, const std::vector<std::string>& jailer_args);
  // VM `vm_id`'s cgroup is gone (or going): its weight no longer counts. Idempotent.
  void Remove(const std::string& vm_id);

  // The parent's weight for `sum`, the sum of its VMs' weights, in the file's range (v2
  // cpu.weight 1..10000, default 100; v1 cpu.shares 2..262144, default 1024) and at most
  // Cap(version, host_cpus).
  [[nodiscard]] static std::uint64_t Clamp(int version, unsigned host_cpus, std::uint64_t sum);
  // The most the parent weighs: the default weight times the host's CPUs, what as many busy
  // default-weight tasks would weigh, so the VMs together never outweigh the rest of the host
  // by more than the host has CPUs to give them.
  [[nodiscard]] static std::uint64_t Cap(int version, unsigned host_cpus);

 private:
  void WriteLocked();  // mu_ held

  const JailCgroups cgroups_;
  std::mutex mu_;
  std::map<std::string, std::uint64_t> weights_;  // guarded by mu_: each counted VM's weight
};

}  // namespace ember::emberd
