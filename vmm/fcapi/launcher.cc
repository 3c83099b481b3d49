#include "vmm/fcapi/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string_view>

#include "vmm/base/fd_passing.h"
#include "vmm/base/status.h"

namespace ember::fcapi {
namespace {

constexpr std::size_t kMaxRequest = 64 * 1024;  // the argument list, NUL-separated
constexpr int kSpawnTimeoutMs = 10'000;

// In the process that becomes ember-vmm: waits to be re-parented to `front` (the middle
// process exits right after forking it), ties its life to the front's, and execs. Only
// async-signal-safe calls.
[[noreturn]] void BecomeVmm(pid_t front, char** argv, int fd) {
  for (int spins = 0; ::getppid() != front; ++spins) {
    if (spins > 1'000'000) ::_exit(127);
    ::sched_yield();
  }
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != front) ::_exit(127);  // the front died before the line above
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGPIPE, SIG_DFL);
  ::fcntl(fd, F_SETFD, 0);
  ::execv(argv[0], argv);
  ::_exit(127);
}

// The helper's loop: one request, one spawn, one reply (the pid, or -errno).
[[noreturn]] void Serve(int socket, pid_t front, std::string binary, std::string fd_flag) {
  std::vector<char> buffer(kMaxRequest + 1);
  while (true) {
    iovec io{buffer.data(), kMaxRequest};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr message{};
    message.msg_iov = &io;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ::_exit(0);  // the front closed its end
    int fd = -1;
    if (cmsghdr* header = CMSG_FIRSTHDR(&message);
        header != nullptr && header->cmsg_type == SCM_RIGHTS) {
      std::memcpy(&fd, CMSG_DATA(header), sizeof fd);
    }
    std::string fd_text = std::to_string(fd);
    std::vector<char*> argv = {binary.data()};
    buffer[static_cast<std::size_t>(n)] = '\0';
    for (char* at = buffer.data(); at < buffer.data() + n; at += std::strlen(at) + 1) {
      argv.push_back(at);
    }
    argv.push_back(fd_flag.data());
    argv.push_back(fd_text.data());
    argv.push_back(nullptr);
    pid_t reply = -EINVAL;
    if (fd >= 0) {
      pid_t middle = ::fork();
      if (middle == 0) {
        pid_t vmm = ::fork();
        if (vmm == 0) BecomeVmm(front, argv.data(), fd);
        pid_t sent = vmm < 0 ? -errno : vmm;
        (void)::send(socket, &sent, sizeof sent, MSG_NOSIGNAL);
        ::_exit(0);
      }
      if (middle < 0) {
        reply = -errno;
        (void)::send(socket, &reply, sizeof reply, MSG_NOSIGNAL);
      } else {
        while (::waitpid(middle, nullptr, 0) < 0 && errno == EINTR) {
        }
      }
    } else {
      (void)::send(socket, &reply, sizeof reply, MSG_NOSIGNAL);
    }
    if (fd >= 0) ::close(fd);
  }
}

}  // namespace

absl::StatusOr<Launcher> Launcher::Start(const std::string& binary, const std::string& fd_flag) {
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) return base::ErrnoError("prctl", "child subreaper");
  int sockets[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sockets) != 0) {
    return base::ErrnoError("socketpair", "launcher");
  }
  base::UniqueFd ours(sockets[0]);
  base::UniqueFd theirs(sockets[1]);
  pid_t front = ::getpid();
  pid_t helper = ::fork();
  if (helper < 0) return base::ErrnoError("fork", "launcher");
  if (helper == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != front) ::_exit(0);
    ours.Reset();
    Serve(theirs.Get(), front, binary, fd_flag);
  }
  return Launcher(std::move(ours));
}

absl::StatusOr<pid_t> Launcher::Spawn(const std::vector<std::string>& args, int fd) {
  std::string request;
  for (const std::string& arg : args) {
    // The helper splits the request at NULs: one inside an argument would add flags of the
    // caller's choosing (a client's path "x\0--seccomp\0off").
    if (arg.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError("an argument holds a NUL character");
    }
    request.append(arg).push_back('\0');
  }
  if (request.size() > kMaxRequest) return absl::InvalidArgumentError("arguments too long");
  const int fds[] = {fd};
  // A blocking socket and a request below the socket's buffer: sent whole or not at all.
  if (absl::StatusOr<std::size_t> sent = base::SendWithFds(socket_.Get(), request, fds);
      !sent.ok() || *sent != request.size()) {
    return absl::InternalError("cannot send the launcher its request: " +
                               (sent.ok() ? std::string("sent in part")
                                          : std::string(sent.status().message())));
  }
  pollfd ready{socket_.Get(), POLLIN, 0};
  if (::poll(&ready, 1, kSpawnTimeoutMs) <= 0) {
    return absl::InternalError("the launcher did not answer");
  }
  pid_t pid = 0;
  if (::recv(socket_.Get(), &pid, sizeof pid, 0) != static_cast<ssize_t>(sizeof pid)) {
    return base::ErrnoError("recv", "launcher");
  }
  if (pid < 0) return base::ErrnoError(-pid, "fork", "ember-vmm");
  return pid;
}

}  // namespace ember::fcapi
