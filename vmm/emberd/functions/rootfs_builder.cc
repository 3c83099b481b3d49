#include "vmm/emberd/functions/rootfs_builder.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <optional>
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

// The image's name in its build directory (the tool's working directory).
constexpr char kImageName[] = "image.ext4";

// In the build's pid-namespace init, forked from the middle process: ember-rootfs with its
// stdio, the archive at kArchiveFd and nothing else the helper holds, in `build_dir`, as `id`
// (uid and gid, no supplementary groups) when the helper is root, with no new privileges.
[[noreturn]] void ExecTool(char* const* argv, int archive, int output, const std::string& build_dir,
                           std::optional<std::uint32_t> id) {
  if (::chdir(build_dir.c_str()) != 0) ::_exit(127);
  if (id && (::setgroups(0, nullptr) != 0 || ::setresgid(*id, *id, *id) != 0 ||
             ::setresuid(*id, *id, *id) != 0)) {
    ::_exit(127);
  }
  // After the uid change, which clears it; the middle process is its parent.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
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

// The middle process, forked from the helper: a process group of its own (a timeout kills
// the group), and as root new pid, network and ipc namespaces for the tool, whose init it
// forks: whatever the tool leaves behind (a process that left the group too) dies with that
// init, and it reaches no network. Exits with the tool's status (128 + N for signal N).
[[noreturn]] void RunBuild(char* const* argv, int archive, int output, const std::string& build_dir,
                           std::optional<std::uint32_t> id, pid_t helper) {
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != helper) ::_exit(127);
  if (id && ::unshare(CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC) != 0) ::_exit(127);
  const pid_t tool = ::fork();
  if (tool < 0) ::_exit(127);
  if (tool == 0) ExecTool(argv, archive, output, build_dir, id);
  ::close(output);  // the helper sees the end of the output once the tool's side is gone
  int status = 0;
  while (::waitpid(tool, &status, 0) < 0) {
    if (errno != EINTR) ::_exit(127);
  }
  ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

// Kills the build `pid` leads and reaps it.
void KillBuild(pid_t pid) {
  ::kill(-pid, SIGKILL);
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

// The build directory `dir` (the builder's, every process of which has ended): its image
// becomes `image`, root's and read-only for everyone, if it is a regular file with no other
// name; then the directory goes.
absl::Status InstallImage(const std::string& dir, const std::string& image, bool drop) {
  base::UniqueFd parent(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!parent) return base::ErrnoError("open", dir);
  base::UniqueFd built(
      ::openat(parent.Get(), kImageName, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!built) return base::ErrnoError("open", "the image ember-rootfs built");
  struct stat st {};
  if (::fstat(built.Get(), &st) != 0) return base::ErrnoError("fstat", image);
  if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
    return absl::InternalError("ember-rootfs left no plain image file");
  }
  if (drop && ::fchown(built.Get(), 0, 0) != 0) return base::ErrnoError("chown", image);
  if (::fchmod(built.Get(), 0444) != 0) return base::ErrnoError("chmod", image);
  if (::renameat(parent.Get(), kImageName, AT_FDCWD, image.c_str()) != 0) {
    return base::ErrnoError("rename", image);
  }
  return absl::OkStatus();
}

// In the helper: ember-rootfs --format oci --max-bytes N /proc/self/fd/3 image.ext4 in a new build
// directory beside `image` (the builder's, when the helper is root), its output gathered, killed at
// `timeout`; the image is then moved to `image` and the directory removed.
absl::Status RunTool(const std::string& tool, int archive, const std::string& image,
                     std::chrono::milliseconds timeout, std::uint32_t builder_id,
                     std::uint64_t max_bytes) {
  const std::optional<std::uint32_t> id =
      ::geteuid() == 0 ? std::optional<std::uint32_t>(builder_id) : std::nullopt;
  const std::string build_dir = image + ".build";
  if (::mkdir(build_dir.c_str(), 0700) != 0) return base::ErrnoError("mkdir", build_dir);
  struct DirGone {
    const std::string& dir;
    ~DirGone() {
      std::error_code ignored;
      std::filesystem::remove_all(dir, ignored);  // symlinks in it are removed, not followed
    }
  } dir_gone{build_dir};
  if (id && ::chown(build_dir.c_str(), *id, *id) != 0) {
    return base::ErrnoError("chown", build_dir);
  }
  std::vector<std::string> args = {tool,
                                   "--format",
                                   "oci",
                                   "--max-bytes",
                                   std::to_string(max_bytes),
                                   "/proc/self/fd/" + std::to_string(kArchiveFd),
                                   kImageName};
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
  if (pid == 0) RunBuild(argv.data(), archive, write_end.Get(), build_dir, id, helper);
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
    // The tool's pid namespace is gone with its init: nothing of the builder's still writes.
    return InstallImage(build_dir, image, id.has_value());
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 2) {
    return absl::InvalidArgumentError("oci_archive_path: " + output);
  }
  return absl::InternalError("ember-rootfs failed (wait status " + std::to_string(status) +
                             "): " + output);
}

[[noreturn]] void Serve(base::UniqueFd socket, const std::string& tool,
                        std::chrono::milliseconds timeout, std::uint32_t builder_id,
                        std::uint64_t max_bytes) {
  std::vector<char> buffer(kMaxMessage);
  while (true) {
    absl::StatusOr<base::Received> got = base::ReceiveWithFds(socket.Get(), buffer);
    if (!got.ok() || got->bytes == 0) ::_exit(0);  // emberd closed its end (or is gone)
    absl::Status built =
        got->fds.size() != 1
            ? absl::InvalidArgumentError("a build request carries exactly one archive")
            : RunTool(tool, got->fds[0].Get(), std::string(buffer.data(), got->bytes), timeout,
                      builder_id, max_bytes);
    const std::string reply = Reply(built);
    if (::send(socket.Get(), reply.data(), reply.size(), MSG_NOSIGNAL) < 0) ::_exit(0);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<RootfsBuilder>> RootfsBuilder::Start(
    std::string tool, std::chrono::milliseconds timeout, std::uint32_t builder_id,
    std::uint64_t max_bytes) {
  if (::access(tool.c_str(), X_OK) != 0) return base::ErrnoError("access", tool);
  // Named apart from emberd and its fork server.
  EMBER_ASSIGN_OR_RETURN(
      base::HelperProcess helper,
      base::ForkHelperProcess("rootfs builder", "emberd-rootfs", [&](base::UniqueFd socket) {
        Serve(std::move(socket), tool, timeout, builder_id, max_bytes);
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
