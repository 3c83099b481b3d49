#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ember/v1/agent.pb.h"
#include "vmm/base/unique_fd.h"
#include "vmm/control/frame.h"

namespace ember::agent {

// How long a send may wait for the host to read before the connection counts as dead.
inline constexpr int kSendTimeoutMs = 30'000;
// How long a new connection may take to send its request.
inline constexpr int kFirstRequestTimeoutMs = 10'000;

// One host connection: agent.proto's frames in both directions. Owned by the thread serving
// that connection; the fd is non-blocking.
class Connection {
 public:
  explicit Connection(base::UniqueFd fd);

  [[nodiscard]] int fd() const { return fd_.Get(); }

  // Waits up to `timeout_ms` (-1: forever) for the next request. nullopt when the host
  // closed its side first. A frame over the limit or one that is no AgentRequest is
  // InvalidArgument; no request in time is DeadlineExceeded.
  [[nodiscard]] absl::StatusOr<std::optional<v1::AgentRequest>> Read(int timeout_ms);

  // For a caller that polls fd() itself: reads what the socket holds. False once the host
  // has closed its side.
  [[nodiscard]] absl::StatusOr<bool> Pump() { return reader_.ReadFrom(fd_.Get()); }
  // Takes the next buffered request, if a whole one is there.
  [[nodiscard]] absl::StatusOr<std::optional<v1::AgentRequest>> NextBuffered();

  [[nodiscard]] absl::Status Send(const v1::AgentResponse& response);
  // Sends `status` as an `error` response; a failure to send is ignored, since the
  // connection is closed next anyway.
  void SendError(const absl::Status& status);

 private:
  base::UniqueFd fd_;
  control::FrameReader reader_;
};

}  // namespace ember::agent
