#pragma once

#include <sys/types.h>

#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::base {

// A helper process and the caller's end of the SOCK_SEQPACKET pair it serves.
struct HelperProcess {
  UniqueFd socket;  // the caller's end, close-on-exec
  pid_t pid = 0;
};

// The helper's end of the pair, in the helper (close-on-exec).
inline constexpr int kHelperSocketFd = 3;

// Forks a helper process that serves the other end of a new SOCK_SEQPACKET socketpair: emberd
// forks its helpers this way at start-up, before it has threads or its seccomp filter, so that
// they may do what emberd's filter forbids (fork and exec, namespaces). Call it while the
// process has one thread: only the calling thread is forked.
//
// In the helper, before `serve` runs with its end (at kHelperSocketFd): it dies with the
// caller (SIGKILL when its parent exits; it exits at once if the caller is already gone), it
// is named `name` in ps and /proc (PR_SET_NAME; the caller's name if null), and it holds no fd
// of the caller's but stdio and its end: every other one is closed, so that no lock or socket
// of the caller's outlives the caller in the helper (a log file of base::SetLogFile included:
// fork helpers before opening one). If `serve` returns, the helper exits with status 0; if
// its preparation fails, with 127.
//
// `what` names the helper in the caller's errors (socketpair or fork failed, with errno).
[[nodiscard]] absl::StatusOr<HelperProcess> ForkHelperProcess(
    const std::string& what, const char* name, absl::FunctionRef<void(UniqueFd socket)> serve);

}  // namespace ember::base
