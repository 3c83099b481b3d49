#include "supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <optional>

#include "command_channel.h"
#include "console.h"
#include "jail.h"
#include "tap_device.h"
#include "vmm/agent_client/agent_client.h"
#include "vmm/agent_client/socket_file.h"
#include "vmm/base/status.h"
#include "vmm/base/unix_address.h"
#include "workload.h"

namespace ember::runtime {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kVmmStopTimeoutMs = 5'000;
// Exit status when the VM ended before the workload reported its own.
constexpr int kVmEndedStatus = 255;
// Exit status when the agent could not start the workload (a shell's "command not found").
constexpr int kNotStartedStatus = 127;

// The signals a supervisor passes on to its workload.
constexpr int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

void Report(int fd, const std::string& line) {
  if (fd < 0) return;
  std::string text = line + "\n";
  ssize_t ignored = ::write(fd, text.data(), text.size());
  (void)ignored;
}

// Whether a process that does not handle `sig` ignores it (SIGCHLD, SIGURG, SIGWINCH, SIGCONT):
// such a signal to a container that has not started changes nothing.
bool IgnoredByDefault(int sig) {
  return sig == SIGCHLD || sig == SIGURG || sig == SIGWINCH || sig == SIGCONT;
}

class Supervisor {
 public:
  Supervisor(const SupervisorSpec& spec, const RuntimeLog& log) : spec_(spec), log_(log) {}

  // Boots the VM; OK once the agent said it is ready.
  absl::Status Boot();
  // Jailed: the ready listener in the jail's output directory, and ROOT/ID/v.sock made a link
  // to ember-vmm's socket there.
  absl::StatusOr<agent_client::ReadyListener> JailReadyListener();
  // Serves commands until the workload (or the VM) ends; the exit status.
  int Serve();
  void Cleanup();

 private:
  enum class Phase { kCreated, kRunning };

  absl::StatusOr<std::string> Handle(const std::string& command);
  absl::StatusOr<std::string> StartWorkload();
  absl::StatusOr<std::string> Kill(int sig, bool all);
  void ServeConnection();
  void OnSignal();

  const SupervisorSpec& spec_;
  const RuntimeLog& log_;
  std::optional<VmmProcess> vmm_;
  base::UniqueFd commands_;
  base::UniqueFd signals_;
  base::UniqueFd console_;  // the pty slave, with a console socket
  base::UniqueFd out_dir_;  // jailed: the jail's output directory (O_PATH)
  base::UniqueFd jail_vsock_;  // jailed: the VMM's vsock socket (O_PATH), the relay's endpoint
  bool tap_made_ = false;
  std::unique_ptr<WorkloadRelay> relay_;
  Phase phase_ = Phase::kCreated;
  bool paused_ = false;
  std::optional<int> exit_status_;  // set once the container is over
};

absl::Status Supervisor::Boot() {
  sigset_t mask;
  sigemptyset(&mask);
  for (int sig : kForwarded) sigaddset(&mask, sig);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  signals_.Reset(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signals_) return base::ErrnoError("signalfd", "supervisor");
  ::signal(SIGPIPE, SIG_IGN);

  EMBER_ASSIGN_OR_RETURN(commands_, ListenForCommands(spec_.root.SupervisorSocket(spec_.id)));
  if (!spec_.tap_name.empty()) {
    EMBER_RETURN_IF_ERROR(CreateTap(spec_.netns_path, spec_.tap_name));
    tap_made_ = true;
  }
  const std::string vsock = spec_.root.VsockPath(spec_.id);
  std::optional<agent_client::ReadyListener> ready;
  if (spec_.jail_root.empty()) {
    absl::StatusOr<agent_client::ReadyListener> listener =
        agent_client::ReadyListener::ForVsock(vsock);
    if (!listener.ok()) return listener.status();
    ready.emplace(std::move(*listener));
  }
  EMBER_ASSIGN_OR_RETURN(VmmProcess vmm, VmmProcess::Launch(spec_.launch, spec_.vm));
  vmm_.emplace(std::move(vmm));
  if (!spec_.jail_root.empty()) {
    // ember-vmm's vsock socket is in the jail's output directory, which the jailer made before
    // ember-vmm said hello: the ready listener goes beside it, the jail's uid's to connect to,
    // and the container's v.sock leads there for `exec`.
    absl::StatusOr<agent_client::ReadyListener> listener = JailReadyListener();
    if (!listener.ok()) return listener.status();
    ready.emplace(std::move(*listener));
  }
  EMBER_RETURN_IF_ERROR(vmm_->Start());
  // The ready event, unless the VMM ends first: both fds in one poll.
  auto deadline = Clock::now() + std::chrono::milliseconds(spec_.boot_timeout_ms);
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      return absl::DeadlineExceededError("the guest agent was not ready within " +
                                         std::to_string(spec_.boot_timeout_ms) + " ms (see " +
                                         spec_.launch.output_path + ")");
    }
    pollfd fds[2] = {{ready->fd(), POLLIN, 0}, {vmm_->exit_fd(), POLLIN, 0}};
    if (::poll(fds, 2, static_cast<int>(left.count())) < 0 && errno != EINTR) {
      return base::ErrnoError("poll", "the agent's ready event");
    }
    if (fds[1].revents != 0) {
      int code = vmm_->Reap();
      return absl::InternalError("the VM ended before its agent was ready (ember-vmm exit code " +
                                 std::to_string(code) + "; see " + spec_.launch.output_path + ")");
    }
    if (fds[0].revents == 0) continue;
    absl::StatusOr<v1::ReadyInfo> info = ready->Accept(static_cast<int>(left.count()));
    if (!info.ok()) return info.status();
    log_.Debug("container " + spec_.id + ": agent ready (" + info->agent_version() + ")");
    break;
  }
  if (!spec_.console_socket.empty()) {
    EMBER_ASSIGN_OR_RETURN(
        console_, OpenConsole(spec_.console_socket, spec_.workload.rows(), spec_.workload.cols()));
  }
  return absl::OkStatus();
}

absl::StatusOr<agent_client::ReadyListener> Supervisor::JailReadyListener() {
  const std::string out = spec_.jail_root + "/out";
  // By an fd: a jail's path is longer than a socket address may be.
  out_dir_.Reset(::open(out.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!out_dir_) return base::ErrnoError("open", out);
  const std::string name = "v.sock_" + std::to_string(v1::AGENT_PORT_READY_EVENT);
  ::unlinkat(out_dir_.Get(), name.c_str(), 0);
  EMBER_ASSIGN_OR_RETURN(agent_client::ReadyListener ready,
                         agent_client::ReadyListener::At("/proc/self/fd/" +
                                                         std::to_string(out_dir_.Get()) + "/" +
                                                         name));
  if (::fchownat(out_dir_.Get(), name.c_str(), spec_.jail_uid, spec_.jail_uid,
                 AT_SYMLINK_NOFOLLOW) != 0) {
    return base::ErrnoError("chown", out + "/" + name);
  }
  const std::string link = spec_.root.VsockPath(spec_.id);
  ::unlink(link.c_str());
  if (::symlink((out + "/v.sock").c_str(), link.c_str()) != 0) {
    return base::ErrnoError("symlink", link);
  }
  return ready;
}

absl::StatusOr<std::string> Supervisor::StartWorkload() {
  if (phase_ != Phase::kCreated) {
    return absl::FailedPreconditionError("cannot start a container that is not created");
  }
  WorkloadRelay::Stdio stdio;
  if (console_) stdio = {console_.Get(), console_.Get(), console_.Get()};
  auto start = [&]() -> absl::StatusOr<std::unique_ptr<WorkloadRelay>> {
    std::string vsock = spec_.root.VsockPath(spec_.id);
    if (!spec_.jail_root.empty()) {
      // The VMM owns the directory its socket is in: connect only to that very socket.
      EMBER_ASSIGN_OR_RETURN(jail_vsock_, OpenJailVsock(spec_.jail_root, spec_.jail_uid));
      vsock = agent_client::SocketFdPath(jail_vsock_);
    }
    return WorkloadRelay::Start(agent_client::Endpoint::Vsock(vsock), spec_.workload, stdio);
  };
  absl::StatusOr<std::unique_ptr<WorkloadRelay>> relay = start();
  if (!relay.ok()) {
    // runc's init fails the same way when it cannot exec the process: the container ends.
    exit_status_ = kNotStartedStatus;
    return relay.status();
  }
  relay_ = std::move(*relay);
  phase_ = Phase::kRunning;
  return std::string();
}

absl::StatusOr<std::string> Supervisor::Kill(int sig, bool all) {
  if (sig == SIGKILL) {
    vmm_->Kill();
    exit_status_ = 128 + SIGKILL;
    return std::string();
  }
  if (phase_ == Phase::kCreated) {
    // No process runs yet: a signal that would end one ends the container.
    if (!IgnoredByDefault(sig)) {
      vmm_->Stop(kVmmStopTimeoutMs);
      exit_status_ = 128 + sig;
    }
    return std::string();
  }
  absl::Status sent = relay_->Signal(sig, all);
  if (!sent.ok()) return sent;
  return std::string();
}

absl::StatusOr<std::string> Supervisor::Handle(const std::string& command) {
  if (command == "start") return StartWorkload();
  if (command == "status") {
    if (paused_) return std::string("paused");
    return std::string(phase_ == Phase::kCreated ? "created" : "running");
  }
  if (command == "pids") {
    return std::to_string(::getpid()) + " " + std::to_string(vmm_->pid());
  }
  if (command == "pause" || command == "resume") {
    bool pause = command == "pause";
    if (paused_ == pause) {
      return absl::FailedPreconditionError(pause ? "container is already paused"
                                                 : "container is not paused");
    }
    absl::Status status = pause ? vmm_->Pause() : vmm_->Resume();
    if (!status.ok()) return status;
    paused_ = pause;
    return std::string();
  }
  if (command.starts_with("kill ")) {
    std::string rest = command.substr(5);
    bool all = rest.ends_with(" all");
    if (all) rest.resize(rest.size() - 4);
    int sig = 0;
    try {
      sig = std::stoi(rest);
    } catch (const std::exception&) {
      return absl::InvalidArgumentError("bad kill request");
    }
    return Kill(sig, all);
  }
  return absl::InvalidArgumentError("unknown supervisor command \"" + command + "\"");
}

void Supervisor::ServeConnection() {
  base::UniqueFd conn(::accept4(commands_.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn) return;
  absl::StatusOr<std::string> command = ReadCommand(conn.Get(), 5'000);
  if (!command.ok()) return;
  absl::StatusOr<std::string> answer = Handle(*command);
  if (!answer.ok())
    log_.Debug("container " + spec_.id + ": " + *command + ": " +
               std::string(answer.status().message()));
  SendAnswer(conn.Get(), answer);
}

void Supervisor::OnSignal() {
  signalfd_siginfo info{};
  while (::read(signals_.Get(), &info, sizeof(info)) == sizeof(info)) {
    int sig = static_cast<int>(info.ssi_signo);
    if (sig == SIGWINCH) {
      winsize size{};
      if (relay_ && console_ && ::ioctl(console_.Get(), TIOCGWINSZ, &size) == 0) {
        (void)relay_->Resize(size.ws_row, size.ws_col);
      }
      continue;
    }
    (void)Kill(sig, false);
  }
}

int Supervisor::Serve() {
  while (!exit_status_) {
    std::vector<pollfd> fds = {
        {commands_.Get(), POLLIN, 0}, {signals_.Get(), POLLIN, 0}, {vmm_->exit_fd(), POLLIN, 0}};
    if (relay_) relay_->AddPollFds(&fds);
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      log_.Error("container " + spec_.id + ": poll: " + std::string(strerror(errno)));
      exit_status_ = kVmEndedStatus;
      break;
    }
    if (relay_) {
      absl::StatusOr<std::optional<int>> ended = relay_->OnReady(fds, 3);
      if (!ended.ok()) {
        log_.Error("container " + spec_.id + ": " + std::string(ended.status().message()));
        exit_status_ = kVmEndedStatus;
      } else if (*ended) {
        exit_status_ = **ended;
      }
      if (exit_status_) break;
    }
    if (fds[2].revents != 0) {
      int code = vmm_->Reap();
      log_.Debug("container " + spec_.id + ": ember-vmm exited with " + std::to_string(code));
      exit_status_ = kVmEndedStatus;
      break;
    }
    if (fds[1].revents != 0) OnSignal();
    if (fds[0].revents != 0) ServeConnection();
  }
  return *exit_status_;
}

void Supervisor::Cleanup() {
  relay_.reset();
  if (vmm_) vmm_->Stop(kVmmStopTimeoutMs);
  commands_.Reset();
  ::unlink(spec_.root.SupervisorSocket(spec_.id).c_str());
  ::unlink(spec_.root.VsockPath(spec_.id).c_str());
  if (tap_made_) {
    absl::Status removed = DeleteTap(spec_.netns_path, spec_.tap_name);
    if (!removed.ok()) log_.Error("container " + spec_.id + ": " + std::string(removed.message()));
  }
}

}  // namespace

int RunSupervisor(const SupervisorSpec& spec, const RuntimeLog& log, base::UniqueFd report) {
  Supervisor supervisor(spec, log);
  absl::Status booted = supervisor.Boot();
  if (!booted.ok()) {
    // Cleaned up before the report: `create` kills this process as soon as it reads it.
    supervisor.Cleanup();
    Report(report.Get(), "error " + std::string(booted.message()));
    return 1;
  }
  Report(report.Get(), "ok");
  report.Reset();
  int status = supervisor.Serve();
  supervisor.Cleanup();
  return status;
}

}  // namespace ember::runtime
