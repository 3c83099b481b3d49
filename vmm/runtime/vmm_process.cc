#include "vmm_process.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>

#include "vmm/base/atomic_file.h"
#include "vmm/base/status.h"
#include "vmm/base/unix_address.h"

namespace ember::runtime {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kChildControlFd = kVmmControlFd;

int MsLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

// The next VmmMessage on `fd`, waiting until `deadline`.
absl::StatusOr<v1::VmmMessage> ReadMessage(int fd, control::FrameReader& reader,
                                           Clock::time_point deadline) {
  while (true) {
    std::string payload;
    absl::StatusOr<bool> complete = reader.Next(&payload);
    if (!complete.ok()) return complete.status();
    if (*complete) {
      v1::VmmMessage message;
      if (!message.ParseFromString(payload)) {
        return absl::DataLossError("ember-vmm sent a frame that is no VmmMessage");
      }
      return message;
    }
    pollfd pfd{fd, POLLIN, 0};
    int ready = ::poll(&pfd, 1, MsLeft(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return base::ErrnoError("poll", "ember-vmm's control socket");
    if (ready == 0) return absl::DeadlineExceededError("ember-vmm did not answer in time");
    absl::StatusOr<bool> open = reader.ReadFrom(fd);
    if (!open.ok()) return open.status();
    if (!*open && reader.buffered() == 0) {
      return absl::UnavailableError("ember-vmm closed its control channel");
    }
  }
}

// A listening Unix socket bound in the container's directory (0700, root's), named through an
// O_PATH fd of it so the directory's length never matters. The supervisor unlinks it as soon as
// it has connected, so nothing else can ever reach ember-vmm's control channel: an abstract
// address would let any local user connect and replace the supervisor as the VMM's controller.
struct PrivateListener {
  base::UniqueFd fd;
  base::UniqueFd dir;
  sockaddr_un address{};
};

absl::StatusOr<PrivateListener> ListenInDirectory(const std::string& dir) {
  PrivateListener listener;
  listener.dir.Reset(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!listener.dir) return base::ErrnoError("open", dir);
  EMBER_ASSIGN_OR_RETURN(listener.address,
                         base::UnixAddress("/proc/self/fd/" + std::to_string(listener.dir.Get()) +
                                           "/control.sock"));
  ::unlink(listener.address.sun_path);  // left by a supervisor killed before it connected
  listener.fd.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener.fd) return base::ErrnoError("socket", "control listener");
  if (::bind(listener.fd.Get(), reinterpret_cast<const sockaddr*>(&listener.address),
             sizeof(listener.address)) != 0) {
    return base::ErrnoError("bind", dir + "/control.sock");
  }
  if (::listen(listener.fd.Get(), 1) != 0) return base::ErrnoError("listen", "control listener");
  return listener;
}

// In the forked child: only async-signal-safe calls until exec. Never returns.
[[noreturn]] void ExecVmm(const std::vector<char*>& argv, int listen_fd, int output_fd,
                          int netns_fd, pid_t parent) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);  // the supervisor died before the prctl
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (netns_fd >= 0 && ::setns(netns_fd, CLONE_NEWNET) != 0) ::_exit(126);
  int null_fd = ::open("/dev/null", O_RDONLY);
  if (null_fd < 0 || ::dup2(null_fd, 0) < 0 || ::dup2(output_fd, 1) < 0 ||
      ::dup2(output_fd, 2) < 0 || ::dup2(listen_fd, kChildControlFd) < 0 ||
      ::fcntl(kChildControlFd, F_SETFD, 0) != 0) {  // dup2 onto itself keeps FD_CLOEXEC
    ::_exit(126);
  }
  ::close_range(kChildControlFd + 1, ~0U, 0);
  ::execv(argv[0], argv.data());
  ::_exit(127);
}

}  // namespace

absl::StatusOr<VmmProcess> VmmProcess::Launch(const VmmLaunch& launch, const v1::VmConfig& config) {
  const bool jailed = !launch.jailer_argv.empty();
  EMBER_RETURN_IF_ERROR(base::WriteFileAtomically(launch.config_path, config.SerializeAsString(),
                                                  jailed ? 0644 : 0600));
  EMBER_ASSIGN_OR_RETURN(PrivateListener listener, ListenInDirectory(launch.control_dir));
  base::UniqueFd output(
      ::open(launch.output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!output) return base::ErrnoError("open", launch.output_path);
  base::UniqueFd netns;
  // A jailed VMM's namespaces are the jailer's to set up.
  if (!launch.netns_path.empty() && !jailed) {
    netns.Reset(::open(launch.netns_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!netns) return base::ErrnoError("open", "network namespace " + launch.netns_path);
  }

  // The jailer names the binary itself (its --exec-file): only the arguments follow its "--".
  std::vector<std::string> args = launch.jailer_argv;
  if (jailed) {
    args.push_back("--");
  } else {
    args.push_back(launch.vmm_path);
  }
  args.insert(args.end(), {"--config-proto", jailed ? launch.config_in_jail : launch.config_path,
                           "--control-fd", std::to_string(kChildControlFd)});
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return base::ErrnoError("fork", "ember-vmm");
  if (pid == 0) ExecVmm(argv, listener.fd.Get(), output.Get(), netns.Get(), parent);

  base::UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  VmmProcess vmm(pid, std::move(pidfd), base::UniqueFd());
  if (!vmm.pidfd_) {
    vmm.Kill();
    return base::ErrnoError("pidfd_open", "ember-vmm");
  }
  base::UniqueFd conn(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  int connected = conn ? ::connect(conn.Get(), reinterpret_cast<const sockaddr*>(&listener.address),
                                   sizeof(listener.address))
                       : -1;
  int connect_errno = errno;
  ::unlink(listener.address.sun_path);
  if (connected != 0) {
    vmm.Kill();
    errno = connect_errno;
    return base::ErrnoError("connect", "ember-vmm's control socket");
  }
  vmm.control_ = std::move(conn);
  absl::StatusOr<v1::VmmMessage> hello =
      ReadMessage(vmm.control_.Get(), vmm.reader_,
                  Clock::now() + std::chrono::milliseconds(launch.hello_timeout_ms));
  if (hello.ok() && hello->has_event() && hello->event().kind() == v1::ControlEvent::BUILD_FAILED) {
    const v1::BuildFailure& failure = hello->event().build_failure();
    vmm.Reap();
    return absl::Status(failure.code() == static_cast<int>(absl::StatusCode::kInvalidArgument)
                            ? absl::StatusCode::kInvalidArgument
                            : absl::StatusCode::kInternal,
                        "ember-vmm could not build the VM: " + failure.message());
  }
  if (!hello.ok() || !hello->has_event() || hello->event().kind() != v1::ControlEvent::HELLO) {
    vmm.Kill();
    return absl::InternalError(
        "ember-vmm did not start (see " + launch.output_path + ")" +
        (hello.ok() ? std::string() : ": " + std::string(hello.status().message())));
  }
  return vmm;
}

VmmProcess::~VmmProcess() { Kill(); }

absl::StatusOr<v1::ControlResponse> VmmProcess::Call(v1::ControlRequest request, int timeout_ms) {
  if (!control_) return absl::FailedPreconditionError("ember-vmm has ended");
  request.set_id(next_id_++);
  std::string frame;
  EMBER_RETURN_IF_ERROR(control::AppendFrame(request, &frame));
  EMBER_RETURN_IF_ERROR(control::WriteAll(control_.Get(), frame, timeout_ms));
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    EMBER_ASSIGN_OR_RETURN(v1::VmmMessage message, ReadMessage(control_.Get(), reader_, deadline));
    if (!message.has_response() || message.response().id() != request.id()) continue;
    const v1::ControlResponse& response = message.response();
    if (response.code() != 0) {
      return absl::Status(static_cast<absl::StatusCode>(response.code()),
                          "ember-vmm: " + response.message());
    }
    return response;
  }
}

absl::Status VmmProcess::Start() {
  v1::ControlRequest request;
  request.mutable_start();
  return Call(std::move(request), 30'000).status();
}

absl::Status VmmProcess::Pause() {
  v1::ControlRequest request;
  request.mutable_pause();
  return Call(std::move(request), 30'000).status();
}

absl::Status VmmProcess::Resume() {
  v1::ControlRequest request;
  request.mutable_resume();
  return Call(std::move(request), 30'000).status();
}

void VmmProcess::Kill() {
  if (pid_ <= 0) return;
  if (pidfd_) {
    ::syscall(SYS_pidfd_send_signal, pidfd_.Get(), SIGKILL, nullptr, 0);
  } else {
    ::kill(pid_, SIGKILL);
  }
  Reap();
}

int VmmProcess::Stop(int timeout_ms) {
  if (pid_ <= 0) return exit_code_;
  ::syscall(SYS_pidfd_send_signal, pidfd_.Get(), SIGTERM, nullptr, 0);
  pollfd pfd{pidfd_.Get(), POLLIN, 0};
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (::poll(&pfd, 1, MsLeft(deadline)) < 0 && errno == EINTR) {
  }
  if (pfd.revents == 0) ::syscall(SYS_pidfd_send_signal, pidfd_.Get(), SIGKILL, nullptr, 0);
  return Reap();
}

int VmmProcess::Reap() {
  if (pid_ <= 0) return exit_code_;
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  control_.Reset();
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return exit_code_;
}

}  // namespace ember::runtime
