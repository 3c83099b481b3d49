#include "vmm/base/fd_passing.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "vmm/base/status.h"

namespace ember::base {

absl::StatusOr<std::size_t> SendWithFds(int socket, std::string_view data,
                                        std::span<const int> fds) {
  if (fds.size() > kMaxPassedFds) return absl::InvalidArgumentError("too many fds to pass");
  iovec iov{const_cast<char*>(data.data()), data.size()};  // sendmsg only reads it
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)] = {};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  if (!fds.empty()) {
    message.msg_control = control;
    message.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(header), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t sent;
  do {
    sent = ::sendmsg(socket, &message, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return ErrnoError("sendmsg");
  return static_cast<std::size_t>(sent);
}

absl::StatusOr<Received> ReceiveWithFds(int socket, std::span<char> buffer) {
  iovec iov{buffer.data(), buffer.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)];
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  Received received;
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    received.would_block = true;
    return received;
  }
  if (n < 0) return ErrnoError("recvmsg");
  received.bytes = static_cast<std::size_t>(n);
  for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      received.fds.emplace_back(fd);  // owned from here: closed on every error below
    }
  }
  // Some of the message's fds are lost: a frame must not get part of what it was sent with.
  if ((message.msg_flags & MSG_CTRUNC) != 0) received.fds.clear();
  return received;
}

}  // namespace ember::base
