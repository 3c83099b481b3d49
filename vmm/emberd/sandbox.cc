#include "vmm/emberd/sandbox.h"

#include <string>

#include "jailer/emberd_seccomp.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"

#ifdef EMBER_EMBERD_TEST_HOOKS
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>
#endif

namespace ember::emberd {
namespace {

#ifdef EMBER_EMBERD_TEST_HOOKS
// Test builds only (emberd-test-hooks, tests/e2e/CMakeLists.txt): with EMBERD_TEST_HOOK_FD=N a
// thread started after the filter waits for a byte on fd N, then opens an AF_NETLINK socket,
// which emberd's allowlist forbids: the filter must end emberd with SIGSYS (or, in log mode,
// let it live). A thread of its own also shows that threads started later are filtered.
void StartForbiddenSyscallHook() {
  const char* fd_text = std::getenv("EMBERD_TEST_HOOK_FD");
  if (fd_text == nullptr) return;
  int fd = std::atoi(fd_text);
  std::thread([fd] {
    char byte;
    if (::read(fd, &byte, 1) != 1) return;
    EMBER_LOG(kWarn) << "emberd test hook: calling socket(AF_NETLINK), which the filter forbids";
    int s = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0);
    EMBER_LOG(kWarn) << "emberd test hook: socket(AF_NETLINK) returned " << s;
    if (s >= 0) ::close(s);
  }).detach();
}
#endif

}  // namespace

absl::StatusOr<std::optional<jailer::SeccompMode>> ParseSeccompFlag(std::string_view text) {
  if (text == "off") return std::optional<jailer::SeccompMode>();
  if (text == "enforce") return std::optional(jailer::SeccompMode::kEnforce);
  if (text == "log") return std::optional(jailer::SeccompMode::kLog);
  return absl::InvalidArgumentError("--seccomp: \"" + std::string(text) +
                                    "\" is not enforce, log or off");
}

absl::Status InstallSandbox(std::optional<jailer::SeccompMode> mode,
                            const jailer::EmberdSeccompParams& params) {
  if (!mode) {
    EMBER_LOG(kWarn) << "emberd: seccomp filter is OFF (--seccomp off): emberd is not filtered";
    return absl::OkStatus();
  }
  jailer::SeccompPolicy policy = jailer::EmberdPolicy(params);
  EMBER_ASSIGN_OR_RETURN(jailer::SeccompFilter filter, jailer::SeccompFilter::Build(policy, *mode));
  EMBER_ASSIGN_OR_RETURN(jailer::BpfProgram program, filter.Compile());
  EMBER_RETURN_IF_ERROR(program.InstallOnAllThreads());
  EMBER_LOG(kInfo) << "emberd: seccomp filter \"" << policy.name << "\" (" << policy.rules.size()
                   << " rules) on every thread, "
                   << (*mode == jailer::SeccompMode::kEnforce
                           ? "enforced: a call outside it kills emberd"
                           : "LOG mode (--seccomp log): calls outside it are logged and allowed");
#ifdef EMBER_EMBERD_TEST_HOOKS
  StartForbiddenSyscallHook();
#endif
  return absl::OkStatus();
}

}  // namespace ember::emberd
