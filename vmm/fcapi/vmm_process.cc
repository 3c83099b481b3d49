#include "vmm/fcapi/vmm_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <utility>

#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/base/unix_address.h"

namespace ember::fcapi {
namespace {

constexpr int kHelloTimeoutMs = 30'000;  // building a VM takes milliseconds; a loaded host more

// A directory of this process's own (0700) holding the control socket and the config file
// until the VMM has them; removed with everything in it when dropped.
class PrivateDir {
 public:
  static absl::StatusOr<PrivateDir> Make(const std::string& parent) {
    std::string pattern = parent + "/.ember-fc-api-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) return base::ErrnoError("mkdtemp", pattern);
    PrivateDir dir;
    dir.path_ = pattern;
    return dir;
  }
  PrivateDir(PrivateDir&& other) noexcept : path_(std::exchange(other.path_, "")) {}
  PrivateDir& operator=(PrivateDir&&) = delete;
  ~PrivateDir() {
    if (path_.empty()) return;
    ::unlink((path_ + "/control.sock").c_str());
    ::unlink((path_ + "/config.pb").c_str());
    ::rmdir(path_.c_str());
  }
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  PrivateDir() = default;
  std::string path_;
};


absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  base::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) return base::ErrnoError("open", path);
  for (std::size_t done = 0; done < bytes.size();) {
    ssize_t n = ::write(fd.Get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return base::ErrnoError("write", path);
    done += static_cast<std::size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status ToStatus(const v1::ControlResponse& response) {
  if (response.code() == 0) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(response.code()), response.message());
}

}  // namespace

absl::StatusOr<std::unique_ptr<VmmProcess>> VmmProcess::Start(std::vector<std::string> args,
                                                              const v1::VmConfig* config,
                                                              const std::string& private_parent,
                                                              Launcher& launcher) {
  EMBER_ASSIGN_OR_RETURN(PrivateDir dir, PrivateDir::Make(private_parent));
  std::string socket_path = dir.path() + "/control.sock";
  EMBER_ASSIGN_OR_RETURN(sockaddr_un address, base::UnixAddress(socket_path));
  base::UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener) return base::ErrnoError("socket", "control channel");
  if (::bind(listener.Get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    return base::ErrnoError("bind", socket_path);
  }
  if (::listen(listener.Get(), 1) != 0) return base::ErrnoError("listen", socket_path);
  // Connected before the VMM exists and before the path goes away: ours is the only
  // connection the VMM will ever accept.
  auto process = std::unique_ptr<VmmProcess>(new VmmProcess());
  process->conn_.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!process->conn_) return base::ErrnoError("socket", "control channel");
  if (::connect(process->conn_.Get(), reinterpret_cast<const sockaddr*>(&address),
                sizeof address) != 0) {
    return base::ErrnoError("connect", socket_path);
  }
  ::unlink(socket_path.c_str());

  std::vector<std::string> argv;
  if (config != nullptr) {
    std::string config_path = dir.path() + "/config.pb";
    EMBER_RETURN_IF_ERROR(WriteFile(config_path, config->SerializeAsString()));
    argv.insert(argv.end(), {"--config-proto", config_path});
  }
  argv.insert(argv.end(), args.begin(), args.end());
  EMBER_ASSIGN_OR_RETURN(pid_t pid, launcher.Spawn(argv, listener.Get()));
  process->pid_ = pid;
  listener.Reset();

  // HELLO, or BUILD_FAILED when the VMM could not build its VM.
  while (true) {
    auto message = process->ReadMessage(kHelloTimeoutMs);
    if (!message.ok()) {
      // A VMM that neither says HELLO nor ends (stuck opening a file, say) must not hold the
      // front, which answers nothing while it waits here: killed, then reaped.
      int code = process->Terminate(SIGKILL);
      return absl::InternalError("ember-vmm ended before its VM was built (" +
                                 std::string(message.status().message()) + ", exit code " +
                                 std::to_string(code) + ")");
    }
    if (!message->has_event()) continue;
    const v1::ControlEvent& event = message->event();
    if (event.kind() == v1::ControlEvent::BUILD_FAILED) {
      process->Terminate(SIGKILL);
      return absl::Status(static_cast<absl::StatusCode>(event.build_failure().code()),
                          event.build_failure().message());
    }
    process->HandleEvent(event);
    if (event.kind() == v1::ControlEvent::HELLO) break;
  }
  if (::fcntl(process->conn_.Get(), F_SETFL, O_NONBLOCK) != 0) {
    return base::ErrnoError("fcntl", "control channel");
  }
  return process;
}

VmmProcess::~VmmProcess() {
  if (pid_ > 0 && !exit_code_) Terminate(SIGKILL);
}

void VmmProcess::HandleEvent(const v1::ControlEvent& event) {
  if (event.has_status()) state_ = event.status().state();
  if (event.kind() == v1::ControlEvent::BOOTED) boot_time_us_ = event.boot_time_us();
  if (event.kind() == v1::ControlEvent::EXITED) state_ = v1::VmmStatus::ENDED;
}

absl::StatusOr<v1::VmmMessage> VmmProcess::ReadMessage(int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string payload;
  while (true) {
    EMBER_ASSIGN_OR_RETURN(bool complete, reader_.Next(&payload));
    if (complete) {
      v1::VmmMessage message;
      if (!message.ParseFromString(payload)) {
        return absl::InternalError("ember-vmm sent a control message that does not parse");
      }
      return message;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return absl::DeadlineExceededError("ember-vmm did not answer in time");
    pollfd poll_fd{conn_.Get(), POLLIN, 0};
    int ready = ::poll(&poll_fd, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno != EINTR) return base::ErrnoError("poll", "control channel");
    if (ready <= 0) continue;
    char chunk[16 * 1024];
    ssize_t n = ::read(conn_.Get(), chunk, sizeof chunk);
    if (n == 0) return absl::UnavailableError("ember-vmm closed its control channel");
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return base::ErrnoError("read", "control channel");
    }
    reader_.Feed(std::string_view(chunk, static_cast<std::size_t>(n)));
  }
}

absl::StatusOr<v1::ControlResponse> VmmProcess::Call(v1::ControlRequest request,
                                                     int timeout_ms, int fd) {
  if (exit_code_) return absl::FailedPreconditionError("the microVM has ended");
  request.set_id(next_id_++);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  EMBER_RETURN_IF_ERROR(control::SendFrame(conn_.Get(), request, fd, timeout_ms));
  while (true) {
    // One deadline for the whole call: a VMM sending events (or answers to other ids) without
    // end must not hold the single-threaded front, and every client with it, for ever.
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return absl::DeadlineExceededError("ember-vmm did not answer in time");
    EMBER_ASSIGN_OR_RETURN(v1::VmmMessage message, ReadMessage(static_cast<int>(left.count())));
    if (message.has_event()) {
      HandleEvent(message.event());
      continue;
    }
    if (message.response().id() != request.id()) continue;
    const v1::ControlResponse& response = message.response();
    if (response.has_status()) state_ = response.status().state();
    EMBER_RETURN_IF_ERROR(ToStatus(response));
    return response;
  }
}

std::optional<int> VmmProcess::Drain() {
  if (exit_code_) return exit_code_;
  auto more = reader_.ReadFrom(conn_.Get());
  std::string payload;
  while (true) {
    auto complete = reader_.Next(&payload);
    if (!complete.ok()) {
      // A bad frame: the stream cannot be resynchronised, and reading on would only pile up
      // what the VMM sends. That is the VMM's end.
      EMBER_LOG(kError) << "ember-vmm's control channel: " << complete.status().message()
                        << "; killing it";
      return Terminate(SIGKILL);
    }
    if (!*complete) break;
    v1::VmmMessage message;
    if (message.ParseFromString(payload) && message.has_event()) HandleEvent(message.event());
  }
  if (!more.ok() || !*more || state_ == v1::VmmStatus::ENDED) return Reap();
  return std::nullopt;
}

int VmmProcess::Reap() {
  if (exit_code_) return *exit_code_;
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return *exit_code_;
}

int VmmProcess::Terminate(int signal) {
  if (!exit_code_) ::kill(pid_, signal);
  return Reap();
}

}  // namespace ember::fcapi
