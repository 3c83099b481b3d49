#include "rootfs/agent/connection.h"

#include <fcntl.h>
#include <poll.h>

#include <chrono>
#include <utility>

#include "vmm/base/status.h"

namespace ember::agent {

Connection::Connection(base::UniqueFd fd) : fd_(std::move(fd)) {
  int flags = ::fcntl(fd_.Get(), F_GETFL);
  if (flags >= 0) (void)::fcntl(fd_.Get(), F_SETFL, flags | O_NONBLOCK);
}

absl::StatusOr<std::optional<v1::AgentRequest>> Connection::NextBuffered() {
  std::string payload;
  EMBER_ASSIGN_OR_RETURN(bool complete, reader_.Next(&payload));
  if (!complete) return std::nullopt;
  v1::AgentRequest request;
  if (!request.ParseFromString(payload)) {
    return absl::InvalidArgumentError("a frame of " + std::to_string(payload.size()) +
                                      " bytes is not an AgentRequest");
  }
  return request;
}

absl::StatusOr<std::optional<v1::AgentRequest>> Connection::Read(int timeout_ms) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    EMBER_ASSIGN_OR_RETURN(std::optional<v1::AgentRequest> request, NextBuffered());
    if (request) return request;
    int wait = -1;
    if (timeout_ms >= 0) {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return absl::DeadlineExceededError("no request from the host in time");
      wait = static_cast<int>(left);
    }
    pollfd pfd{fd_.Get(), POLLIN, 0};
    int ready = ::poll(&pfd, 1, wait);
    if (ready < 0 && errno != EINTR) return base::ErrnoError("poll", "host connection");
    if (ready <= 0) continue;
    EMBER_ASSIGN_OR_RETURN(bool open, Pump());
    if (!open) {
      // Whatever completed before the end still counts.
      EMBER_ASSIGN_OR_RETURN(std::optional<v1::AgentRequest> last, NextBuffered());
      if (last) return last;
      if (reader_.buffered() > 0) {
        return absl::InvalidArgumentError("the host closed the connection inside a frame");
      }
      return std::nullopt;
    }
  }
}

absl::Status Connection::Send(const v1::AgentResponse& response) {
  std::string bytes;
  EMBER_RETURN_IF_ERROR(control::AppendFrame(response, &bytes));
  return control::WriteAll(fd_.Get(), bytes, kSendTimeoutMs);
}

void Connection::SendError(const absl::Status& status) {
  v1::AgentResponse response;
  response.mutable_error()->set_code(static_cast<int>(status.code()));
  response.mutable_error()->set_message(std::string(status.message()));
  (void)Send(response);
}

}  // namespace ember::agent
