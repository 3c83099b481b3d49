#pragma once

#include <cstdint>
#include <vector>

#include "jailer/seccomp_filter.h"

namespace ember::jailer {

// ember-vmm's thread kinds, each with its own allowlist (vmm_seccomp.cc). The control channel
// is served on the VMM thread, so it has no kind of its own; a dedicated control thread would
// get one here.
enum class VmmThreadKind {
  kVmm,   // the event loop: virtio queues, io_uring, console input, signals, metrics, control
  kVcpu,  // one per vCPU: KVM_RUN and the port/MMIO exits it dispatches
  // a userfaultfd restore's page server (snapshot/uffd_page_server.h): reads fault messages,
  // answers them with UFFDIO_COPY/UFFDIO_ZEROPAGE
  kPageServer,
};

[[nodiscard]] const char* VmmThreadKindName(VmmThreadKind kind);

// What the policies need to know of the VMM that is only known at run time.
struct VmmSeccompParams {
  // The real-time signal the VMM thread sends a vCPU thread to make KVM_RUN return
  // (VcpuRunner's kick signal); the only signal the VMM thread may send.
  int kick_signal = 0;
  // The VMM's own pid (its tgid), known when the filter is built: tgkill reaches only the
  // VMM's own threads, never another process. 0: tgkill is not limited by target.
  std::uint64_t pid = 0;
  // KVM ioctl requests the VMM thread issues after start-up: reading vCPU and VM state for a
  // snapshot. Passed in by ember-vmm, which owns the KVM ABI (vmm/kvm/kvm_abi.h), rather than
  // spelled here.
  std::vector<std::uint64_t> snapshot_ioctls;
  // The VMM writes files only in directories it holds open (ember-vmm --dirs-by-fd, what
  // emberd starts it with): a snapshot's in the directory that comes with the request, a
  // working set's in the directory opened at restore. The VMM thread then opens no directory
  // by name at all (its openat admits no O_RDONLY|O_DIRECTORY).
  bool directories_by_fd = false;
};

// The allowlist of `kind`. Each thread installs its own once it has finished setting up (the
// VMM thread after building the VM and starting the vCPUs, a vCPU thread before its first
// KVM_RUN), so set-up calls are not in these tables.
[[nodiscard]] SeccompPolicy VmmThreadPolicy(VmmThreadKind kind, const VmmSeccompParams& params);

}  // namespace ember::jailer
