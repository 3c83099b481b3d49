#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

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

 private:
  std::string buffer_;
  std::size_t consumed_ = 0;
};

// Writes all of `data` to `fd` (borrowed; blocking or not), waiting up to `timeout_ms` in
// total for the socket to drain. Never raises SIGPIPE.
[[nodiscard]] absl::Status WriteAll(int fd, std::string_view data, int timeout_ms);

// Writes what it can of `*pending` to a non-blocking `fd` and erases the written prefix.
// Returns true when `*pending` is empty afterwards.
[[nodiscard]] absl::StatusOr<bool> FlushSome(int fd, std::string* pending);

}  // namespace ember::control
