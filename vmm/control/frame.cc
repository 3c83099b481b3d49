#include "vmm/control/frame.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include <google/protobuf/message_lite.h>

#include "vmm/base/fd_passing.h"
#include "vmm/base/status.h"

namespace ember::control {

absl::Status AppendFrame(const google::protobuf::MessageLite& message, std::string* out) {
  std::size_t size = message.ByteSizeLong();
  if (size > kMaxFramePayloadBytes) {
    return absl::InvalidArgumentError("control message of " + std::to_string(size) +
                                      " bytes exceeds the " +
                                      std::to_string(kMaxFramePayloadBytes) + "-byte frame limit");
  }
  auto length = static_cast<std::uint32_t>(size);
  for (std::size_t i = 0; i < kFrameHeaderBytes; ++i) {
    out->push_back(static_cast<char>((length >> (8 * i)) & 0xff));
  }
  if (!message.AppendToString(out)) {
    return absl::InternalError("cannot serialize control message");
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> FrameReader::Next(std::string* payload) {
  std::size_t available = buffer_.size() - consumed_;
  if (available < kFrameHeaderBytes) return false;
  std::uint32_t length = 0;
  for (std::size_t i = 0; i < kFrameHeaderBytes; ++i) {
    length |= std::uint32_t{static_cast<unsigned char>(buffer_[consumed_ + i])} << (8 * i);
  }
  if (length > kMaxFramePayloadBytes) {
    return absl::InvalidArgumentError("control frame declares " + std::to_string(length) +
                                      " bytes, more than the " +
                                      std::to_string(kMaxFramePayloadBytes) + "-byte limit");
  }
  if (available - kFrameHeaderBytes < length) return false;
  payload->assign(buffer_, consumed_ + kFrameHeaderBytes, length);
  consumed_ += kFrameHeaderBytes + length;
  stream_consumed_ += kFrameHeaderBytes + length;
  // Compact once the consumed prefix dominates, so the buffer does not grow without bound.
  if (consumed_ == buffer_.size()) {
    buffer_.clear();
    consumed_ = 0;
  } else if (consumed_ > 64 * 1024 && consumed_ * 2 > buffer_.size()) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
  return true;
}

absl::StatusOr<bool> FrameReader::ReadFrom(int fd) {
  char chunk[16 * 1024];
  while (true) {
    ssize_t n = ::read(fd, chunk, sizeof(chunk));
    if (n > 0) {
      Feed(std::string_view(chunk, static_cast<std::size_t>(n)));
      // Bound what one peer can make us buffer: a frame plus its header at most.
      if (buffered() > kMaxFramePayloadBytes + kFrameHeaderBytes + sizeof(chunk)) return true;
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
    return base::ErrnoError("read", "control socket");
  }
}

absl::StatusOr<bool> FrameReader::ReadWithFdsFrom(int fd) {
  char chunk[16 * 1024];
  while (true) {
    absl::StatusOr<base::Received> got = base::ReceiveWithFds(fd, chunk);
    if (!got.ok()) return absl::Status(got.status().code(), "control socket: " +
                                                            std::string(got.status().message()));
    if (got->would_block) return true;
    if (got->bytes == 0) return false;
    Feed(std::string_view(chunk, got->bytes));
    stream_read_ += got->bytes;
    for (base::UniqueFd& passed : got->fds) fds_.emplace_back(stream_read_, std::move(passed));
    // Bound what one peer can make us buffer: a frame plus its header at most, and its fds.
    if (buffered() > kMaxFramePayloadBytes + kFrameHeaderBytes + sizeof(chunk)) return true;
    if (fds_.size() > base::kMaxPassedFds * 4) {
      return absl::InvalidArgumentError("control socket: more fds than the frames read take");
    }
  }
}

absl::StatusOr<bool> FrameReader::NextWithFds(std::string* payload,
                                              std::vector<base::UniqueFd>* fds) {
  fds->clear();
  const std::uint64_t start = stream_consumed_;
  EMBER_ASSIGN_OR_RETURN(bool got, Next(payload));
  if (!got) return false;
  const std::uint64_t end = stream_consumed_;
  while (!fds_.empty() && fds_.front().first <= end) {
    if (fds_.front().first > start) fds->push_back(std::move(fds_.front().second));
    fds_.pop_front();  // an earlier frame's that it did not take: closed
  }
  return true;
}

absl::Status SendFrame(int socket, const google::protobuf::MessageLite& message, int fd,
                       int timeout_ms) {
  std::string frame;
  EMBER_RETURN_IF_ERROR(AppendFrame(message, &frame));
  std::size_t sent = 0;
  if (fd >= 0) {
    const int fds[] = {fd};
    while (true) {
      absl::StatusOr<std::size_t> first = base::SendWithFds(socket, frame, fds);
      if (first.ok()) {
        sent = *first;
        break;
      }
      // A full non-blocking socket: wait for room, then try again with the fd.
      pollfd room{socket, POLLOUT, 0};
      if (!absl::IsUnavailable(first.status()) || ::poll(&room, 1, timeout_ms) <= 0) {
        return absl::UnavailableError("control socket: cannot send a frame with its fd: " +
                                      std::string(first.status().message()));
      }
    }
  }
  return WriteAll(socket, std::string_view(frame).substr(sent), timeout_ms);
}

absl::Status WriteAll(int fd, std::string_view data, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      return base::ErrnoError("send", "control socket");
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) return absl::DeadlineExceededError("control socket did not drain in time");
    pollfd pfd{fd, POLLOUT, 0};
    ::poll(&pfd, 1, static_cast<int>(left));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> FlushSome(int fd, std::string* pending) {
  std::size_t written = 0;
  while (written < pending->size()) {
    ssize_t n = ::send(fd, pending->data() + written, pending->size() - written,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      written += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    return base::ErrnoError("send", "control socket");
  }
  pending->erase(0, written);
  return pending->empty();
}

}  // namespace ember::control
