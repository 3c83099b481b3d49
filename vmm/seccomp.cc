#include "vmm/seccomp.h"

#include <linux/kvm.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <optional>
#include <string>
#include <utility>

#include "jailer/seccomp_filter.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/kvm/kvm_abi.h"

namespace ember::vmm {
namespace {

// One compiled program per thread kind; written by ConfigureSeccomp before threads exist and
// only read afterwards.
std::array<std::optional<jailer::BpfProgram>, 3> g_programs;
SeccompInstalledHook g_installed_hook = nullptr;
// Whether the compiled filters let the VMM thread open no directory (DirectoriesByFdOnly).
bool g_directories_by_fd = false;
// Set once any thread of this process runs under a filter; read by the leak check below.
std::atomic<bool> g_any_filter_installed{false};

std::size_t Index(jailer::VmmThreadKind kind) { return static_cast<std::size_t>(kind); }

// VcpuRunner's kick signal (vcpu_runner.cc): glibc reserves SIGRTMIN..SIGRTMIN+2.
int KickSignal() { return SIGRTMIN + 3; }

}  // namespace

absl::StatusOr<SeccompSetting> ParseSeccompSetting(std::string_view text) {
  if (text == "enforce") return SeccompSetting::kEnforce;
  if (text == "log") return SeccompSetting::kLog;
  if (text == "off") return SeccompSetting::kOff;
  return absl::InvalidArgumentError("--seccomp: \"" + std::string(text) +
                                    "\" is not enforce, log or off");
}

void WarnIfSeccompRelaxed(SeccompSetting setting) {
  if (setting == SeccompSetting::kOff) {
    EMBER_LOG(kWarn) << "seccomp filters are OFF (--seccomp off): no thread is filtered";
  } else if (setting == SeccompSetting::kLog) {
    EMBER_LOG(kWarn) << "seccomp filters in LOG mode (--seccomp log): calls outside a thread's "
                        "allowlist are logged by the kernel and allowed";
  }
}

absl::Status ConfigureSeccomp(SeccompSetting setting, bool directories_by_fd) {
  // A pooled VMM compiled its filters before its launch (vmm/pool_slot.h); a launch with the
  // same setting keeps them, another one replaces them.
  static std::optional<std::pair<SeccompSetting, bool>> compiled;
  if (compiled == std::pair(setting, directories_by_fd)) return absl::OkStatus();
  for (std::optional<jailer::BpfProgram>& program : g_programs) program.reset();
  compiled.reset();
  g_directories_by_fd = false;
  if (setting == SeccompSetting::kOff) return absl::OkStatus();
  jailer::SeccompMode mode =
      setting == SeccompSetting::kLog ? jailer::SeccompMode::kLog : jailer::SeccompMode::kEnforce;
  jailer::VmmSeccompParams params;
  params.kick_signal = KickSignal();
  params.pid = static_cast<std::uint64_t>(::getpid());  // tgkill only within this process
  params.directories_by_fd = directories_by_fd;
  // What Vmm::CaptureState issues (vmm/vcpu_state.cc, vmm/kvm/*): the vCPU state getters,
  // KVM's MSR list and XSAVE size, the VM-wide irqchip, PIT and clock, and (diff snapshots)
  // the dirty log.
  params.snapshot_ioctls = {
      KVM_GET_REGS,       KVM_GET_SREGS,          KVM_GET_FPU,         kvm::kGetXsave,
      kvm::kGetXsave2,    KVM_GET_XCRS,           kvm::kGetMsrs,       KVM_GET_LAPIC,
      KVM_GET_MP_STATE,   KVM_GET_VCPU_EVENTS,    KVM_GET_DEBUGREGS,   kvm::kGetMsrIndexList,
      KVM_CHECK_EXTENSION, KVM_GET_IRQCHIP,       KVM_GET_PIT2,        KVM_GET_CLOCK,
      KVM_GET_DIRTY_LOG};
  for (jailer::VmmThreadKind kind : {jailer::VmmThreadKind::kVmm, jailer::VmmThreadKind::kVcpu,
                                     jailer::VmmThreadKind::kPageServer}) {
    EMBER_ASSIGN_OR_RETURN(
        jailer::SeccompFilter filter,
        jailer::SeccompFilter::Build(jailer::VmmThreadPolicy(kind, params), mode));
    EMBER_ASSIGN_OR_RETURN(g_programs[Index(kind)], filter.Compile());
  }
  compiled = std::pair(setting, directories_by_fd);
  g_directories_by_fd = directories_by_fd;
  return absl::OkStatus();
}

bool DirectoriesByFdOnly() { return g_directories_by_fd; }

absl::Status InstallThreadSeccomp(jailer::VmmThreadKind kind) {
  const std::optional<jailer::BpfProgram>& program = g_programs[Index(kind)];
  if (!program) return absl::OkStatus();
  EMBER_RETURN_IF_ERROR(program->InstallOnCallingThread());
  g_any_filter_installed.store(true);
  EMBER_LOG(kDebug) << "seccomp filter \"" << program->name() << "\" (" << program->size()
                    << " instructions) installed";
  if (g_installed_hook != nullptr) g_installed_hook(kind);
  return absl::OkStatus();
}

void SetSeccompInstalledHookForTesting(SeccompInstalledHook hook) { g_installed_hook = hook; }

}  // namespace ember::vmm

#if defined(__SANITIZE_ADDRESS__)
#define EMBER_VMM_LEAK_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMBER_VMM_LEAK_SANITIZER 1
#endif
#endif
#ifdef EMBER_VMM_LEAK_SANITIZER
// Sanitizer builds only. LeakSanitizer's check at exit stops every thread from a new thread
// with ptrace and reads /proc/self: the exiting thread's seccomp filter kills the VMM with
// SIGSYS at the first of those calls, so every filtered run "failed". LSan asks this hook (a
// weak symbol of its runtime) before checking: the check is skipped once a filter is on, and
// still made for a VMM that runs with --seccomp off and for every in-process test.
extern "C" int __lsan_is_turned_off() {
  return ember::vmm::g_any_filter_installed.load() ? 1 : 0;
}
#endif
