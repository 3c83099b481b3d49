#include "vmm/pool_slot.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "vmm/base/status.h"
#include "vmm/control/frame.h"
#include "vmm/control/pool_launch.h"
#include "vmm/exit_code.h"
#include "vmm/seccomp.h"

namespace ember::vmm {
namespace {

// Where an exec'd ember-vmm finds what emberd's launcher gives it (vmm/emberd/launcher.h):
// the control listener (--control-fd 3) and the inherited files from fd 4 on, at most 64.
constexpr int kControlFd = 3;
constexpr int kFirstFileFd = 4;
constexpr int kReservedFdEnd = kFirstFileFd + 64;

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "ember-vmm --pool-slot: error: %s\n", message.c_str());
  std::exit(kExitError);
}

void DieIf(const absl::Status& status, const char* what) {
  if (!status.ok()) Die(std::string(what) + ": " + std::string(status.message()));
}

// Keeps fds [kControlFd, kReservedFdEnd) taken (by one eventfd, close-on-exec) while the slot
// prepares, so that its own fds (KVM's, the connection) land above them and the launch's fds
// can go exactly where an exec'd VMM has them. Not /dev/null: a jailed slot has none.
void ReserveLaunchFds() {
  int null = ::eventfd(0, EFD_CLOEXEC);
  if (null < 0) Die("eventfd: " + std::string(std::strerror(errno)));
  for (int fd = kControlFd; fd < kReservedFdEnd; ++fd) {
    if (fd != null && ::fcntl(fd, F_GETFD) < 0 && ::dup3(null, fd, O_CLOEXEC) < 0) {
      Die("dup3: " + std::string(std::strerror(errno)));
    }
  }
  if (null >= kReservedFdEnd) ::close(null);
}

void Prepare(PreparedKvm* prepared) {
  // Compiled once here; Main's ConfigureSeccomp with the same setting finds them done: emberd's
  // unjailed launches ask for --dirs-by-fd (their files are /proc/self/fd paths), its jailed
  // ones do not (a jail has no /proc: a slot without one is jailed).
  const bool jailed = ::access("/proc/self/fd", F_OK) != 0;
  DieIf(ConfigureSeccomp(SeccompSetting::kEnforce, /*directories_by_fd=*/!jailed), "seccomp");
  DieIf(PrepareKvm(*prepared), "KVM");
}

// Waits until `fd` is readable; false when poll fails.
bool WaitReadable(int fd) {
  pollfd p{fd, POLLIN, 0};
  while (::poll(&p, 1, -1) < 0) {
    if (errno != EINTR) return false;
  }
  return true;
}

}  // namespace

std::vector<std::string> RunPoolSlot(int listen_fd, PreparedKvm* prepared) {
  base::UniqueFd listener(::fcntl(listen_fd, F_DUPFD_CLOEXEC, kReservedFdEnd));
  if (!listener) Die("fcntl(F_DUPFD_CLOEXEC): " + std::string(std::strerror(errno)));
  ::close(listen_fd);
  ReserveLaunchFds();
  Prepare(prepared);

  // emberd connected before spawning the slot; its connection waits in the backlog.
  base::UniqueFd conn;
  while (!conn) {
    if (!WaitReadable(listener.Get())) Die("poll: " + std::string(std::strerror(errno)));
    conn.Reset(::accept4(listener.Get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!conn && errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
      std::exit(kExitOk);  // the pool closed the socket: nothing to serve
    }
  }
  listener.Reset();  // one connection only
  control::FrameReader reader;
  std::string payload;
  std::vector<base::UniqueFd> fds;
  for (bool open = true;;) {
    absl::StatusOr<bool> got = reader.NextWithFds(&payload, &fds);
    DieIf(got.status(), "launch frame");
    if (*got) break;
    // emberd closes its end once the launch is sent: the frame may come with the end.
    if (!open) std::exit(kExitOk);  // the pool let the slot go
    if (!WaitReadable(conn.Get())) Die("poll: " + std::string(std::strerror(errno)));
    absl::StatusOr<bool> read = reader.ReadWithFdsFrom(conn.Get());
    open = read.ok() && *read;
  }
  absl::StatusOr<control::PoolLaunch> launch = control::DecodePoolLaunch(payload);
  DieIf(launch.status(), "launch");
  // Before anything of the VM runs: its jail's file size bound, as the jailer sets it.
  if (launch->file_size_limit != 0) {
    const rlimit limit{launch->file_size_limit, launch->file_size_limit};
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) {
      Die("setrlimit(RLIMIT_FSIZE): " + std::string(std::strerror(errno)));
    }
  }
  std::vector<std::string>* args = &launch->args;
  if (fds.size() < control::kPoolLaunchFixedFds ||
      fds.size() - control::kPoolLaunchFixedFds > kReservedFdEnd - kFirstFileFd) {
    Die("a launch carries its control listener, its log and at most 64 files; this one " +
        std::to_string(fds.size()) + " fds");
  }
  // Where an exec'd VMM has them; dup2 leaves the copies inheritable, as exec would have.
  const std::size_t files = fds.size() - control::kPoolLaunchFixedFds;
  bool placed = ::dup2(fds[0].Get(), kControlFd) == kControlFd && ::dup2(fds[1].Get(), 2) == 2;
  for (std::size_t i = 0; placed && i < files; ++i) {
    const int target = kFirstFileFd + static_cast<int>(i);
    placed = ::dup2(fds[control::kPoolLaunchFixedFds + i].Get(), target) == target;
  }
  if (!placed) Die("dup2: " + std::string(std::strerror(errno)));
  fds.clear();
  for (int fd = kFirstFileFd + static_cast<int>(files); fd < kReservedFdEnd; ++fd) ::close(fd);
  args->insert(args->end(), {"--control-fd", std::to_string(kControlFd)});
  return std::move(*args);
}

}  // namespace ember::vmm
