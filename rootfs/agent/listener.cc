#include "rootfs/agent/listener.h"

#include <linux/vm_sockets.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "vmm/base/status.h"
#include "vmm/base/unix_address.h"
#include "vmm/control/frame.h"

namespace ember::agent {
namespace {

constexpr int kBacklog = 64;
constexpr int kReadyEventTimeoutMs = 5'000;


absl::Status ConnectWithin(int fd, const sockaddr* addr, socklen_t size, const std::string& what) {
  if (::connect(fd, addr, size) == 0) return absl::OkStatus();
  if (errno != EINPROGRESS) return base::ErrnoError("connect", what);
  pollfd pfd{fd, POLLOUT, 0};
  if (::poll(&pfd, 1, kReadyEventTimeoutMs) <= 0) {
    return absl::DeadlineExceededError("connect " + what + " timed out");
  }
  int err = 0;
  socklen_t len = sizeof(err);
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) return base::ErrnoError(err, "connect", what);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<base::UniqueFd> ListenVsock(std::uint32_t port) {
  base::UniqueFd fd(::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.Valid()) return base::ErrnoError("socket", "AF_VSOCK");
  sockaddr_vm addr{};
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = VMADDR_CID_ANY;
  addr.svm_port = port;
  if (::bind(fd.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return base::ErrnoError("bind", "vsock port " + std::to_string(port));
  }
  if (::listen(fd.Get(), kBacklog) != 0) return base::ErrnoError("listen", "vsock");
  return fd;
}

absl::StatusOr<base::UniqueFd> ListenUnix(const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(sockaddr_un addr, base::UnixAddress(path));
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::AlreadyExistsError(path + " exists and is not a socket");
    }
    ::unlink(path.c_str());
  }
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.Valid()) return base::ErrnoError("socket", "AF_UNIX");
  // sockaddr_un is the sockaddr of AF_UNIX: the kernel reads it by family.
  if (::bind(fd.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return base::ErrnoError("bind", path);
  }
  if (::listen(fd.Get(), kBacklog) != 0) return base::ErrnoError("listen", path);
  return fd;
}

absl::Status SendReadyEvent(const v1::ReadyInfo& info, const std::string& unix_path) {
  base::UniqueFd fd;
  std::string what;
  if (unix_path.empty()) {
    fd.Reset(::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.Valid()) return base::ErrnoError("socket", "AF_VSOCK");
    sockaddr_vm addr{};
    addr.svm_family = AF_VSOCK;
    addr.svm_cid = VMADDR_CID_HOST;
    addr.svm_port = v1::AGENT_PORT_READY_EVENT;
    what = "vsock host port " + std::to_string(addr.svm_port);
    EMBER_RETURN_IF_ERROR(ConnectWithin(fd.Get(), reinterpret_cast<const sockaddr*>(&addr),
                                        sizeof(addr), what));
  } else {
    EMBER_ASSIGN_OR_RETURN(sockaddr_un addr, base::UnixAddress(unix_path));
    fd.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.Valid()) return base::ErrnoError("socket", "AF_UNIX");
    what = unix_path;
    EMBER_RETURN_IF_ERROR(ConnectWithin(fd.Get(), reinterpret_cast<const sockaddr*>(&addr),
                                        sizeof(addr), what));
  }
  v1::AgentEvent event;
  *event.mutable_ready() = info;
  std::string bytes;
  EMBER_RETURN_IF_ERROR(control::AppendFrame(event, &bytes));
  return control::WriteAll(fd.Get(), bytes, kReadyEventTimeoutMs);
}

}  // namespace ember::agent
