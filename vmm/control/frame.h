#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <deque>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace google::protobuf {
class MessageLite;
}

namespace ember::control {

// The control channel's wire format (proto/ember/v1/vmm_control.proto): each message is one
// frame, a 4-byte little-endian payload length followed by the serialized message.
constexpr std::size_t kFrameHeaderBytes = 4;
// Larger frames are a protocol error: no control message comes near this.
constexpr std::size_t kMaxFramePayloadBytes = std::size_t{1} << 20;

// Serializes `message` and appends it as one frame to `out`. Fails (InvalidArgument) when the
// message is larger than kMaxFramePayloadBytes.
[[nodiscard]] absl::Status AppendFrame(const google::protobuf::MessageLite& message,
                                       std::string* out);

// Splits a byte stream into frame payloads. Owned by whoever reads the socket.
class FrameReader {
 public:
  // Adds bytes received from the peer.
  void Feed(std::string_view bytes) { buffer_.append(bytes); }

  // Takes the next complete payload into `payload`: true if there was one, false if more bytes
  // are needed. A length above kMaxFramePayloadBytes is InvalidArgument, after which the
  // stream cannot be resynchronised and the connection must be closed.
  [[nodiscard]] absl::StatusOr<bool> Next(std::string* payload);

  // Reads whatever a non-blocking `fd` (borrowed) holds into the buffer. Returns false once
  // the peer has closed the stream; errors are the read's errno.
  [[nodiscard]] absl::StatusOr<bool> ReadFrom(int fd);

  [[nodiscard]] std::size_t buffered() const { return buffer_.size() - consumed_; }

  // ReadFrom for a peer that may attach fds to a frame (SCM_RIGHTS, sent with the frame in
  // one sendmsg: SendFrame). Each fd is kept with how far the stream had been read when it
  // came; NextWithFds hands a frame the fds that came with its own bytes. Fds beyond
  // base::kMaxPassedFds in one message are dropped by the kernel (the frame then gets none).
  [[nodiscard]] absl::StatusOr<bool> ReadWithFdsFrom(int fd);
  // Next, plus the fds attached to that frame (moved into *fds, replacing its contents); fds
  // that came with earlier frames, which did not take them, are closed.
  [[nodiscard]] absl::StatusOr<bool> NextWithFds(std::string* payload,
                                                 std::vector<base::UniqueFd>* fds);

 private:
  std::string buffer_;
  std::size_t consumed_ = 0;
  std::uint64_t stream_consumed_ = 0;  // bytes of the stream taken by Next, all frames
  std::uint64_t stream_read_ = 0;      // bytes of the stream read by ReadWithFdsFrom
  // Fds received, each with stream_read_ just after the recvmsg that brought them: a frame
  // sent in one sendmsg gets its fds in a read that ends inside it (after its first byte,
  // never past its end, since a read stops after a message carrying fds).
  std::deque<std::pair<std::uint64_t, base::UniqueFd>> fds_;
};

// Sends `message` as one frame on a blocking or non-blocking `socket` (borrowed), with `fd`
// (borrowed, or -1 for none) attached to it (SCM_RIGHTS) in the same sendmsg, waiting up to
// `timeout_ms` for the rest when the socket takes only part. Never raises SIGPIPE.
[[nodiscard]] absl::Status SendFrame(int socket, const google::protobuf::MessageLite& message,
                                     int fd, int timeout_ms);

// Writes all of `data` to `fd` (borrowed; blocking or not), waiting up to `timeout_ms` in
// total for the socket to drain. Never raises SIGPIPE.
[[nodiscard]] absl::Status WriteAll(int fd, std::string_view data, int timeout_ms);

// Writes what it can of `*pending` to a non-blocking `fd` and erases the written prefix.
// Returns true when `*pending` is empty afterwards.
[[nodiscard]] absl::StatusOr<bool> FlushSome(int fd, std::string* pending);

}  // namespace ember::control
