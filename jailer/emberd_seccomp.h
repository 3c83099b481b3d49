#pragma once

#include <cstdint>
#include <optional>

#include "jailer/seccomp_filter.h"

namespace ember::jailer {

// What emberd's allowlist needs to know that is only known at start-up.
struct EmberdSeccompParams {
  // emberd also listens on TCP (--tcp): gRPC then accepts, and probes with, AF_INET/AF_INET6
  // sockets. Without it emberd's only sockets are AF_UNIX.
  bool tcp = false;
  // emberd runs its VMs jailed, and the snapshot files it keeps are of this group: a snapshot
  // a jailed ember-vmm wrote is moved out of its jail (or copied, across filesystems) and
  // given to root and this group, mode 0440 (fchown, fchmod), and only to them.
  std::optional<std::uint32_t> snapshot_gid;
};

// emberd's allowlist (emberd_seccomp.cc): one policy for the whole process, installed on every
// thread at once (BpfProgram::InstallOnAllThreads) once the gRPC server has started, so it
// covers gRPC's pollers and thread pool, the VM supervisor, and every thread started later.
// emberd never execs after that: ember-vmm is spawned by a helper forked before the filter
// (vmm/emberd/launcher.h, ForkServerLauncher), so neither execve nor what ember-vmm needs to
// build a VM is in the table, and ember-vmm does not inherit this filter.
[[nodiscard]] SeccompPolicy EmberdPolicy(const EmberdSeccompParams& params);

}  // namespace ember::jailer
