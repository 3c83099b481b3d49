#include "vmm/uffd_handoff.h"

#include <linux/sockios.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "snapshot/uffd_page_server.h"
#include "vmm/base/clock.h"
#include "vmm/base/fd_passing.h"
#include "vmm/base/status.h"
#include "vmm/base/unix_address.h"

namespace ember::vmm {
namespace {

constexpr std::uint64_t kPageSize = 4096;
// <asm-generic/socket.h>'s SO_PEERPIDFD (Linux 6.5), which older C library headers lack.
#ifdef SO_PEERPIDFD
constexpr int kSoPeerPidfd = SO_PEERPIDFD;
#else
constexpr int kSoPeerPidfd = 77;
#endif

std::string Where(const std::string& socket_path) {
  return "the page-fault handler at " + socket_path;
}

absl::Status HandlerError(const std::string& socket_path, const std::string& what) {
  return absl::InvalidArgumentError(Where(socket_path) + ": " + what);
}

absl::StatusOr<base::UniqueFd> RegisterMemory(const base::GuestMemory& memory) {
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd uffd, snapshot::OpenUserfaultfd());
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = UFFD_FEATURE_EVENT_REMOVE;
  if (::ioctl(uffd.Get(), UFFDIO_API, &api) != 0) {
    return base::ErrnoError("ioctl(UFFDIO_API, UFFD_FEATURE_EVENT_REMOVE)", "userfaultfd");
  }
  for (const base::GuestRegion& region : memory.regions()) {
    uffdio_register reg{};
    reg.range.start = reinterpret_cast<std::uint64_t>(region.host);  // the kernel's integer form
    reg.range.len = region.size;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (::ioctl(uffd.Get(), UFFDIO_REGISTER, &reg) != 0) {
      return base::ErrnoError("ioctl(UFFDIO_REGISTER)", "guest memory");
    }
    if ((reg.ioctls & (1ull << _UFFDIO_COPY)) == 0) {
      return absl::FailedPreconditionError(
          "userfaultfd: this kernel cannot copy pages into anonymous guest memory");
    }
  }
  return uffd;
}

std::string MappingsJson(const base::GuestMemory& memory) {
  std::string json = "[";
  for (const base::GuestRegion& region : memory.regions()) {
    if (json.size() > 1) json += ",";
    absl::StrAppend(&json, "{\"base_host_virt_addr\":",
                    reinterpret_cast<std::uint64_t>(region.host),  // an address, as a number
                    ",\"size\":", region.size, ",\"offset\":", region.file_offset,
                    ",\"page_size\":", kPageSize, ",\"page_size_kib\":", kPageSize, "}");
  }
  return json + "]";
}

absl::Status SendWithFd(int socket, const std::string& payload, int fd) {
  const int fds[] = {fd};
  absl::StatusOr<std::size_t> sent = base::SendWithFds(socket, payload, fds);
  if (!sent.ok() &&
      (absl::IsUnavailable(sent.status()) || absl::IsFailedPrecondition(sent.status()))) {
    // ECONNRESET or EPIPE: the handler is gone already.
    return absl::UnavailableError("closed the connection without taking the uffd (" +
                                  std::string(sent.status().message()) + ")");
  }
  EMBER_RETURN_IF_ERROR(sent.status());
  // The fd went with the first byte; the rest follows as plain bytes.
  std::string_view rest = std::string_view(payload).substr(*sent);
  while (!rest.empty()) {
    ssize_t n = ::send(socket, rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return base::ErrnoError("send", "the memory mappings");
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
  return absl::OkStatus();
}

// Waits until the handler has read everything sent (the socket's send queue is empty). A
// handler that closes its end first leaves ECONNRESET on ours (the kernel sets it when a
// socket is closed with unread data, before it frees that data).
absl::Status WaitUntilTaken(int socket, const std::string& socket_path,
                            std::uint64_t deadline_us) {
  for (;;) {
    int unread = 0;
    if (::ioctl(socket, SIOCOUTQ, &unread) != 0) return base::ErrnoError("ioctl(SIOCOUTQ)", socket_path);
    int error = 0;
    socklen_t len = sizeof error;
    if (::getsockopt(socket, SOL_SOCKET, SO_ERROR, &error, &len) != 0) {
      return base::ErrnoError("getsockopt(SO_ERROR)", socket_path);
    }
    if (error != 0) {
      return HandlerError(socket_path, absl::StrCat("closed the connection without taking the "
                                                    "uffd (",
                                                    std::strerror(error), ")"));
    }
    if (unread == 0) return absl::OkStatus();
    std::uint64_t now = base::MonotonicMicros();
    if (now >= deadline_us) {
      return HandlerError(socket_path,
                          absl::StrCat("did not take the uffd within ",
                                       UffdHandoff::kHandshakeTimeout.count(), " s"));
    }
    pollfd watch{socket, POLLRDHUP, 0};
    (void)::poll(&watch, 1, 10);  // a closed peer wakes us; otherwise look again in 10 ms
  }
}

}  // namespace

UffdHandoff::ExitWatch UffdHandoff::exit_watch() const {
  if (pidfd_) return {pidfd_.Get(), EPOLLIN};
  return {socket_.Get(), EPOLLRDHUP | EPOLLHUP};
}

absl::StatusOr<std::unique_ptr<UffdHandoff>> UffdHandoff::Create(const base::GuestMemory& memory,
                                                                 const std::string& socket_path) {
  std::unique_ptr<UffdHandoff> handoff(new UffdHandoff());
  handoff->socket_path_ = socket_path;
  EMBER_ASSIGN_OR_RETURN(handoff->uffd_, RegisterMemory(memory));

  EMBER_ASSIGN_OR_RETURN(sockaddr_un address, base::UnixAddress(socket_path));
  handoff->socket_.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!handoff->socket_) return base::ErrnoError("socket(AF_UNIX)", Where(socket_path));
  const int socket = handoff->socket_.Get();
  // A Unix connect waits for room in a full backlog, and a send for room in the buffer, for
  // at most the send timeout.
  timeval timeout{kHandshakeTimeout.count(), 0};
  if (::setsockopt(socket, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout) != 0) {
    return base::ErrnoError("setsockopt(SO_SNDTIMEO)", Where(socket_path));
  }
  const std::uint64_t deadline_us =
      base::MonotonicMicros() +
      static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(kHandshakeTimeout).count());
  // The address as the sockaddr the call takes.
  if (::connect(socket, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    return HandlerError(socket_path, absl::StrCat("cannot connect (", std::strerror(errno),
                                                  "): start the handler listening there first"));
  }
  ucred peer{};
  socklen_t len = sizeof peer;
  if (::getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0 && peer.pid > 0) {
    handoff->handler_pid_ = peer.pid;
  }
  // The handler's pidfd, whether or not its pid is visible from this pid namespace (a jailed
  // VMM's is its own): SO_PEERPIDFD (Linux 6.5) hands it over with the connection. Before
  // that, pidfd_open of a visible pid (ESRCH: it already exited; the handshake below says so).
  int pidfd = -1;
  socklen_t pidfd_len = sizeof pidfd;
  if (::getsockopt(socket, SOL_SOCKET, kSoPeerPidfd, &pidfd, &pidfd_len) == 0 && pidfd >= 0) {
    handoff->pidfd_.Reset(pidfd);
  } else if (handoff->handler_pid_ > 0) {
    handoff->pidfd_.Reset(static_cast<int>(::syscall(SYS_pidfd_open, handoff->handler_pid_, 0)));
  }
  if (absl::Status sent = SendWithFd(socket, MappingsJson(memory), handoff->uffd_.Get());
      !sent.ok()) {
    return HandlerError(socket_path, std::string(sent.message()));
  }
  EMBER_RETURN_IF_ERROR(WaitUntilTaken(socket, socket_path, deadline_us));
  return handoff;
}

}  // namespace ember::vmm
