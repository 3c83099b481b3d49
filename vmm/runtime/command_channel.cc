#include "command_channel.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "vmm/base/status.h"
#include "vmm/base/unix_address.h"
#include "vmm/control/frame.h"

namespace ember::runtime {
namespace {

constexpr std::size_t kMaxLine = 4096;

// Reads up to a newline (not kept), or the peer's end.
absl::StatusOr<std::string> ReadLine(int fd, int timeout_ms, const std::string& what) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string line;
  while (line.size() < kMaxLine) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{fd, POLLIN, 0};
    int ready = ::poll(&pfd, 1, left.count() < 0 ? 0 : static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return base::ErrnoError("poll", what);
    if (ready == 0) return absl::DeadlineExceededError(what + ": no answer in time");
    char c;
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return base::ErrnoError("read", what);
    if (n == 0 || c == '\n') return line;
    line.push_back(c);
  }
  return absl::InvalidArgumentError(what + ": line too long");
}

}  // namespace

absl::StatusOr<std::string> AskSupervisor(const std::string& socket_path,
                                          const std::string& request, int timeout_ms) {
  EMBER_ASSIGN_OR_RETURN(sockaddr_un addr, base::UnixAddress(socket_path));
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return base::ErrnoError("socket", socket_path);
  if (::connect(fd.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::UnavailableError("the container's supervisor does not answer (" + socket_path +
                                  ": " + std::string(strerror(errno)) + ")");
  }
  EMBER_RETURN_IF_ERROR(control::WriteAll(fd.Get(), request + "\n", timeout_ms));
  absl::StatusOr<std::string> answer = ReadLine(fd.Get(), timeout_ms, "the container's supervisor");
  if (!answer.ok()) return absl::UnavailableError(answer.status().message());
  if (answer->starts_with("ok")) return answer->size() > 3 ? answer->substr(3) : std::string();
  if (answer->starts_with("error ")) return absl::FailedPreconditionError(answer->substr(6));
  if (answer->empty()) {
    return absl::UnavailableError("the container's supervisor ended before it answered");
  }
  return absl::DataLossError("the container's supervisor answered \"" + *answer + "\"");
}

absl::StatusOr<base::UniqueFd> ListenForCommands(const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(sockaddr_un addr, base::UnixAddress(path));
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return base::ErrnoError("socket", path);
  ::unlink(path.c_str());
  if (::bind(fd.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return base::ErrnoError("bind", path);
  }
  if (::listen(fd.Get(), 16) != 0) return base::ErrnoError("listen", path);
  return fd;
}

absl::StatusOr<std::string> ReadCommand(int fd, int timeout_ms) {
  return ReadLine(fd, timeout_ms, "a command");
}

void SendAnswer(int fd, const absl::StatusOr<std::string>& answer) {
  std::string line;
  if (answer.ok()) {
    line = answer->empty() ? "ok\n" : "ok " + *answer + "\n";
  } else {
    std::string message(answer.status().message());
    for (char& c : message) {
      if (c == '\n') c = ' ';
    }
    line = "error " + message + "\n";
  }
  (void)control::WriteAll(fd, line, 5'000);
}

}  // namespace ember::runtime
