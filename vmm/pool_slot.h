#pragma once

#include <string>
#include <vector>

#include "vmm/vmm.h"

namespace ember::vmm {

// ember-vmm --pool-slot: a VMM started before it is asked for (emberd's VMM pool,
// vmm/emberd/vmm_pool.h). It does now what every VMM does whatever its VM (exec, loading,
// static set-up, its seccomp filters compiled, /dev/kvm opened and KVM's supported CPUID read,
// the VM created with its TSS, irqchip and PIT, into `prepared`), then waits on its listening socket `listen_fd` (owned)
// for emberd's one connection and the launch that comes on it (control/pool_launch.h): the
// arguments it would have been exec'd with and the VM's fds. Those fds are put where an
// exec'd ember-vmm finds them (its control listener at 3, its log on stderr, inherited files
// from 4 on), the slot's own socket is closed, and the returned arguments (with
// --control-fd 3) run Main as if exec'd with them. Until then it holds no file of any VM, and
// it serves the one launch only: a pooled VMM is never given a second VM.
//
// Exits the process with code 0 when emberd closes the connection (or never connects and
// closes the socket) before a launch: the pool let the slot go; with kExitError when it
// cannot prepare or the launch is malformed.
[[nodiscard]] std::vector<std::string> RunPoolSlot(int listen_fd, PreparedKvm* prepared);

}  // namespace ember::vmm
