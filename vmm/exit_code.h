#pragma once

#include <string>

namespace ember::vmm {

// ember-vmm's process exit codes; each way a VM can end has its own, so supervisors can tell
// them apart without parsing logs.
enum ExitCode : int {
  kExitOk = 0,               // guest reset/powered off, or stopped by SIGTERM/SIGINT
  kExitError = 1,            // the VMM failed (a host resource, an ioctl)
  kExitBadInput = 2,         // bad config, kernel, initrd or command-line flags
  kExitTripleFault = 3,      // the guest triple-faulted (KVM_EXIT_SHUTDOWN)
  kExitKvmInternalError = 4, // KVM could not emulate or run the guest (KVM_EXIT_INTERNAL_ERROR)
  kExitKvmFailEntry = 5,     // the CPU refused to enter the guest (KVM_EXIT_FAIL_ENTRY)
  kExitUnexpectedExit = 6,   // a vCPU exit reason the VMM does not handle
};

// How a VM ended: the code the process exits with and a one-line reason for the log.
struct VmExit {
  int code = kExitOk;
  std::string reason;
};

}  // namespace ember::vmm
