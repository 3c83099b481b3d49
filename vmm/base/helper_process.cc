#include "vmm/base/helper_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vmm/base/status.h"

namespace ember::base {
namespace {

// The helper's first steps (see ForkHelperProcess); `socket` is its end of the pair.
[[noreturn]] void RunHelper(int socket, pid_t parent, const char* name,
                            absl::FunctionRef<void(UniqueFd socket)> serve) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The parent died before the line above: nothing would kill the helper when it does.
  if (::getppid() != parent) ::_exit(0);
  if (name != nullptr) ::prctl(PR_SET_NAME, name);
  if (socket != kHelperSocketFd) {
    if (::dup3(socket, kHelperSocketFd, O_CLOEXEC) != kHelperSocketFd) ::_exit(127);
    ::close(socket);
  }
  if (::close_range(kHelperSocketFd + 1, ~0U, 0) != 0) ::_exit(127);
  serve(UniqueFd(kHelperSocketFd));
  ::_exit(0);
}

}  // namespace

absl::StatusOr<HelperProcess> ForkHelperProcess(const std::string& what, const char* name,
                                                absl::FunctionRef<void(UniqueFd socket)> serve) {
  int pair[2];
  // SEQPACKET: one request or reply per message, fds attached to it.
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    return ErrnoError("socketpair", what);
  }
  UniqueFd ours(pair[0]);
  UniqueFd theirs(pair[1]);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return ErrnoError("fork", what);
  if (pid == 0) {
    ours.Reset();
    RunHelper(theirs.Release(), parent, name, serve);
  }
  return HelperProcess{std::move(ours), pid};
}

}  // namespace ember::base
