#include "vmm/emberd/functions/rootfs_builder.h"

#include <fcntl.h>
#include <signal.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <charconv>
#include <vector>

#include "vmm/base/fd_passing.h"
#include "vmm/base/helper_process.h"
#include "vmm/base/status.h"

extern char** environ;

namespace ember::emberd::functions {
namespace {

constexpr std::size_t kMaxMessage = 4096;
// Where ember-rootfs finds the archive: inherited at this fd.
constexpr int kArchiveFd = 3;

// A reply: the status code as digits, a space, the message.
std::string Reply(const absl::Status& status) {
  return std::to_string(static_cast<int>(status.code())) + " " + std::string(status.message());
}

absl::Status FromReply(const std::string& reply) {
  int code = 0;
  auto [end, ec] = std::from_chars(reply.data(), reply.data() + reply.size(), code);
  if (ec != std::errc() || end == reply.data() + reply.size() || *end != ' ') {
    return absl::InternalError("malformed reply from the rootfs builder");
  }
  return absl::Status(static_cast<absl::StatusCode>(code), std::string(end + 1));
}

// In the child, between fork and exec (async-signal-safe calls only): ember-rootfs with its
// stdio, the archive at kArchiveFd and nothing else the helper holds.
[[noreturn]] void ExecTool(char* const* argv, int archive, int output, pid_t helper) {
  ::setpgid(0, 0);  // a group of its own: a timeout kills whatever it started too
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != helper) ::_exit(127);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ::_exit(127);
  const int null = ::open("/dev/null", O_RDONLY);
  if (null < 0 || ::dup2(null, 0) < 0 || ::dup2(output, 1) < 0 || ::dup2(output, 2) < 0) {
    ::_exit(127);
  }
  // dup2 onto itself would leave the received fd's close-on-exec flag set.
  if (archive == kArchiveFd ? ::fcntl(archive, F_SETFD, 0) != 0
                            : ::dup2(archive, kArchiveFd) < 0) {
    ::_exit(127);
  }
  if (::close_range(kArchiveFd + 1, ~0U, 0) != 0) ::_exit(127);
  ::execve(argv[0], argv, environ);
  ::_exit(127);
}

// Kills the build `pid` leads and reaps it.
void KillBuild(pid_t pid) {
  ::kill(-pid, SIGKILL);
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

// In the helper: ember-rootfs --format oci /proc/self/fd/3 IMAGE, its output gathered, killed
// at `timeout`.
absl::Status RunTool(const std::string& tool, int archive, const std::string& image,
                     std::chrono::milliseconds timeout) {
  std::vector<std::string> args = {tool, "--format", "oci",
                                   "/proc/self/fd/" + std::to_string(kArchiveFd), image};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return base::ErrnoError("pipe2", "ember-rootfs");
  base::UniqueFd read_end(pipe_fds[0]);
  base::UniqueFd write_end(pipe_fds[1]);
  const pid_t helper = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return base::ErrnoError("fork", tool);
  if (pid == 0) ExecTool(argv.data(), archive, write_end.Get(), helper);
  write_end.Reset();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string output;
  char buffer[512];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{read_end.Get(), POLLIN, 0};
    const int ready = left.count() > 0 ? ::poll(&pfd, 1, static_cast<int>(left.count())) : 0;
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      KillBuild(pid);
      ::unlink(image.c_str());
      return absl::DeadlineExceededError(
          "oci_archive_path: ember-rootfs did not build the image within " +
          std::to_string(timeout.count()) + " ms; it was stopped");
    }
    const ssize_t n = ::read(read_end.Get(), buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (output.size() < kMaxMessage / 2) output.append(buffer, static_cast<std::size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return base::ErrnoError("waitpid", tool);
  }
  while (!output.empty() && output.back() == '\n') output.pop_back();
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    if (::chmod(image.c_str(), 0444) != 0) return base::ErrnoError("chmod", image);
    return absl::OkStatus();
  }
  ::unlink(image.c_str());
  if (WIFEXITED(status) && WEXITSTATUS(status) == 2) {
    return absl::InvalidArgumentError("oci_archive_path: " + output);
  }
  return absl::InternalError("ember-rootfs failed (wait status " + std::to_string(status) +
                             "): " + output);
}

[[noreturn]] void Serve(base::UniqueFd socket, const std::string& tool,
                        std::chrono::milliseconds timeout) {
  std::vector<char> buffer(kMaxMessage);
  while (true) {
    absl::StatusOr<base::Received> got = base::ReceiveWithFds(socket.Get(), buffer);
    if (!got.ok() || got->bytes == 0) ::_exit(0);  // emberd closed its end (or is gone)
    absl::Status built =
        got->fds.size() != 1
            ? absl::InvalidArgumentError("a build request carries exactly one archive")
            : RunTool(tool, got->fds[0].Get(), std::string(buffer.data(), got->bytes), timeout);
    const std::string reply = Reply(built);
    if (::send(socket.Get(), reply.data(), reply.size(), MSG_NOSIGNAL) < 0) ::_exit(0);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<RootfsBuilder>> RootfsBuilder::Start(
    std::string tool, std::chrono::milliseconds timeout) {
  if (::access(tool.c_str(), X_OK) != 0) return base::ErrnoError("access", tool);
  // Named apart from emberd and its fork server.
  EMBER_ASSIGN_OR_RETURN(base::HelperProcess helper,
                         base::ForkHelperProcess("rootfs builder", "emberd-rootfs",
                                                 [&](base::UniqueFd socket) {
                                                   Serve(std::move(socket), tool, timeout);
                                                 }));
  return std::unique_ptr<RootfsBuilder>(
      new RootfsBuilder(std::move(helper.socket), helper.pid));
}

absl::Status RootfsBuilder::Build(int archive, const std::string& image) {
  if (image.size() >= kMaxMessage) return absl::InvalidArgumentError("image path too long");
  std::lock_guard lock(mu_);
  const int fds[] = {archive};
  EMBER_ASSIGN_OR_RETURN(std::size_t sent, base::SendWithFds(socket_.Get(), image, fds));
  if (sent != image.size()) return absl::InternalError("short request to the rootfs builder");
  std::string reply(kMaxMessage, '\0');
  ssize_t n;
  do {
    n = ::recv(socket_.Get(), reply.data(), reply.size(), 0);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) {
    return absl::UnavailableError("emberd's rootfs builder (pid " + std::to_string(helper_pid_) +
                                  ") did not answer");
  }
  reply.resize(static_cast<std::size_t>(n));
  return FromReply(reply);
}

}  // namespace ember::emberd::functions
