#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "jailer/vmm_seccomp.h"

namespace ember::vmm {

// ember-vmm's --seccomp flag, as Firecracker's filters: on (enforced) unless turned off.
enum class SeccompSetting {
  kEnforce,  // a call outside a thread's allowlist kills the VMM with SIGSYS (default)
  kLog,      // such calls are logged by the kernel (audit) and allowed; for debugging
  kOff,      // no filters
};

// "enforce", "log" or "off"; InvalidArgument otherwise.
[[nodiscard]] absl::StatusOr<SeccompSetting> ParseSeccompSetting(std::string_view text);

// Called by main, before any thread exists: compiles every thread kind's filter (so that
// installing one later is a single system call). A second call with the setting already
// compiled does nothing (a pooled VMM compiles before its launch: vmm/pool_slot.h). Logs nothing, so main may call it before the
// log is set up. A process that never calls it (tests building VMs in-process) installs no
// filters.
// `directories_by_fd`: ember-vmm --dirs-by-fd (jailer::VmmSeccompParams::directories_by_fd).
[[nodiscard]] absl::Status ConfigureSeccomp(SeccompSetting setting,
                                            bool directories_by_fd = false);

// Whether ConfigureSeccomp compiled filters under which the VMM thread opens no directory by
// name: a durable file it writes must then lie in a directory it holds open (Vmm's snapshots
// and working set check this first, rather than die of SIGSYS).
[[nodiscard]] bool DirectoriesByFdOnly();

// Logs a warning when `setting` is not enforce. Called by main once logging is set up.
void WarnIfSeccompRelaxed(SeccompSetting setting);

// Called by each thread of the VMM, on itself, when it has finished setting up and before it
// serves the guest: installs the filter of `kind` on the calling thread only. No-op when
// filters are off or were never configured.
[[nodiscard]] absl::Status InstallThreadSeccomp(jailer::VmmThreadKind kind);

// For a test build of ember-vmm only (main.cc with EMBER_VMM_TEST_HOOKS): called on a thread
// right after it installed its filter. Production code never sets it.
using SeccompInstalledHook = void (*)(jailer::VmmThreadKind kind);
void SetSeccompInstalledHookForTesting(SeccompInstalledHook hook);

}  // namespace ember::vmm
