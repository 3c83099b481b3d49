#include "vmm/agent_client/agent_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

#include "vmm/base/status.h"
#include "vmm/base/unix_address.h"

namespace ember::agent_client {
namespace {

using Clock = std::chrono::steady_clock;

// "OK 4294967295\n" and a little slack: a longer line is no handshake answer.
constexpr std::size_t kMaxHandshakeLine = 32;


int MsLeft(Clock::time_point deadline) {
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

// Waits for `events` on `fd` until `deadline`; DeadlineExceeded naming `what` otherwise.
absl::Status WaitReady(int fd, short events, Clock::time_point deadline, const std::string& what) {
  while (true) {
    pollfd pfd{fd, events, 0};
    int ready = ::poll(&pfd, 1, MsLeft(deadline));
    if (ready > 0) return absl::OkStatus();
    if (ready < 0 && errno != EINTR) return base::ErrnoError("poll", what);
    if (ready == 0) return absl::DeadlineExceededError(what + " timed out");
  }
}

absl::StatusOr<base::UniqueFd> ConnectUnix(const std::string& path, Clock::time_point deadline) {
  EMBER_ASSIGN_OR_RETURN(sockaddr_un addr, base::UnixAddress(path));
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.Valid()) return base::ErrnoError("socket", "AF_UNIX");
  while (true) {
    // sockaddr_un is the sockaddr of AF_UNIX: the kernel reads it by family.
    if (::connect(fd.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) {
      return fd;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      // The listener's backlog is full: nothing is in progress (the socket stays unconnected),
      // so try again until the deadline rather than wait for a POLLOUT that means nothing.
      int left = MsLeft(deadline);
      if (left == 0) {
        return absl::UnavailableError("connect " + path +
                                      ": the listener's backlog stayed full (nobody accepts)");
      }
      ::poll(nullptr, 0, left < 10 ? left : 10);
      continue;
    }
    if (errno != EINPROGRESS) {
      absl::Status error = base::ErrnoError("connect", path);
      return absl::UnavailableError(error.message());
    }
    EMBER_RETURN_IF_ERROR(WaitReady(fd.Get(), POLLOUT, deadline, "connect " + path));
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd.Get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return absl::UnavailableError(base::ErrnoError(err, "connect", path).message());
    return fd;
  }
}

// Firecracker's host-initiated vsock handshake on ember-vmm's backend socket.
absl::Status Handshake(int fd, std::uint32_t port, const std::string& uds_path,
                       Clock::time_point deadline) {
  const std::string what = "vsock CONNECT " + std::to_string(port) + " on " + uds_path;
  const std::string line = "CONNECT " + std::to_string(port) + "\n";
  EMBER_RETURN_IF_ERROR(control::WriteAll(fd, line, MsLeft(deadline)));
  // One byte at a time: whatever follows the newline is the agent's, not ours to take.
  std::string answer;
  while (answer.empty() || answer.back() != '\n') {
    if (answer.size() >= kMaxHandshakeLine) {
      return absl::UnavailableError(what + ": the answer is no \"OK <port>\" line");
    }
    char c;
    ssize_t n = ::recv(fd, &c, 1, 0);
    if (n == 1) {
      answer.push_back(c);
      continue;
    }
    if (n == 0) {
      return absl::UnavailableError(what + ": refused (nothing listens on that guest port, or "
                                           "the guest has no vsock driver up)");
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return base::ErrnoError("recv", what);
    EMBER_RETURN_IF_ERROR(WaitReady(fd, POLLIN, deadline, what));
  }
  if (answer.rfind("OK ", 0) != 0) {
    answer.pop_back();
    return absl::UnavailableError(what + ": answered \"" + answer + "\"");
  }
  return absl::OkStatus();
}

// The next frame's payload from `fd`, within `timeout_ms` (-1: no limit). The peer closing
// first is UNAVAILABLE; a frame over the limit DATA_LOSS.
absl::StatusOr<std::string> ReceiveFrame(int fd, control::FrameReader& reader, int timeout_ms,
                                         const std::string& what) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  bool open = true;
  while (true) {
    std::string payload;
    absl::StatusOr<bool> complete = reader.Next(&payload);
    if (!complete.ok()) return absl::DataLossError(complete.status().message());
    if (*complete) return payload;
    if (!open) {
      return absl::UnavailableError(what + ": the agent closed the connection " +
                                    (reader.buffered() > 0 ? "inside a frame" : "before its answer"));
    }
    pollfd pfd{fd, POLLIN, 0};
    int ready = ::poll(&pfd, 1, timeout_ms < 0 ? -1 : MsLeft(deadline));
    if (ready < 0 && errno != EINTR) return base::ErrnoError("poll", what);
    if (ready == 0) return absl::DeadlineExceededError(what + ": no answer from the agent in time");
    if (ready < 0) continue;
    EMBER_ASSIGN_OR_RETURN(open, reader.ReadFrom(fd));
  }
}

absl::Status FromError(const v1::Error& error) {
  int code = error.code();
  if (code <= 0 || code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    code = static_cast<int>(absl::StatusCode::kUnknown);
  }
  return absl::Status(static_cast<absl::StatusCode>(code), "agent: " + error.message());
}

absl::Status Unexpected(const v1::AgentResponse& response, const std::string& wanted) {
  return absl::DataLossError("agent answered with " +
                             std::to_string(static_cast<int>(response.kind_case())) +
                             " where " + wanted + " was due");
}

}  // namespace

absl::StatusOr<Stream> Stream::Open(const Endpoint& endpoint, const Options& options) {
  auto deadline = Clock::now() + std::chrono::milliseconds(options.connect_timeout_ms);
  if (!endpoint.unix_path.empty()) {
    EMBER_ASSIGN_OR_RETURN(base::UniqueFd fd, ConnectUnix(endpoint.unix_path, deadline));
    return Stream(std::move(fd));
  }
  if (endpoint.vsock_uds_path.empty()) {
    return absl::InvalidArgumentError("an agent endpoint needs a unix path or a vsock uds_path");
  }
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd fd, ConnectUnix(endpoint.vsock_uds_path, deadline));
  EMBER_RETURN_IF_ERROR(Handshake(fd.Get(), endpoint.port, endpoint.vsock_uds_path, deadline));
  return Stream(std::move(fd));
}

absl::Status Stream::Send(const v1::AgentRequest& request) {
  std::string bytes;
  EMBER_RETURN_IF_ERROR(control::AppendFrame(request, &bytes));
  return control::WriteAll(fd_.Get(), bytes, 30'000);
}

absl::StatusOr<v1::AgentResponse> Stream::Receive(int timeout_ms) {
  EMBER_ASSIGN_OR_RETURN(std::string payload,
                         ReceiveFrame(fd_.Get(), reader_, timeout_ms, "agent connection"));
  v1::AgentResponse response;
  if (!response.ParseFromString(payload)) {
    return absl::DataLossError("agent sent a frame that is no AgentResponse");
  }
  return response;
}

absl::Status ExecCall::SendStdin(std::string_view data, bool eof) {
  v1::AgentRequest request;
  request.mutable_stdin_data()->set_data(std::string(data));
  request.mutable_stdin_data()->set_eof(eof);
  return stream_.Send(request);
}

absl::Status ExecCall::Signal(int sig, bool all) {
  v1::AgentRequest request;
  request.mutable_signal()->set_exec_id(started_.exec_id());
  request.mutable_signal()->set_signal(sig);
  request.mutable_signal()->set_all(all);
  return stream_.Send(request);
}

absl::Status ExecCall::Resize(std::uint32_t rows, std::uint32_t cols) {
  v1::AgentRequest request;
  request.mutable_resize()->set_exec_id(started_.exec_id());
  request.mutable_resize()->set_rows(rows);
  request.mutable_resize()->set_cols(cols);
  return stream_.Send(request);
}

absl::StatusOr<v1::ExitStatus> ExecCall::Wait(const OutputCallback& on_output) {
  auto deadline = Clock::now() + std::chrono::milliseconds(wait_ms_);
  while (true) {
    EMBER_ASSIGN_OR_RETURN(v1::AgentResponse response,
                           stream_.Receive(wait_ms_ < 0 ? -1 : MsLeft(deadline)));
    switch (response.kind_case()) {
      case v1::AgentResponse::kOutput:
        if (on_output) on_output(response.output().stream(), response.output().data());
        break;
      case v1::AgentResponse::kExit:
        return response.exit();
      case v1::AgentResponse::kError:
        return FromError(response.error());
      default:
        return Unexpected(response, "output or exit");
    }
  }
}

int AgentClient::WaitFor(std::uint32_t request_timeout_ms) const {
  if (request_timeout_ms == 0) return -1;
  return static_cast<int>(request_timeout_ms) + options_.reply_timeout_ms;
}

absl::StatusOr<v1::AgentResponse> AgentClient::Call(const v1::AgentRequest& request,
                                                    int timeout_ms, std::optional<Stream>* keep) {
  EMBER_ASSIGN_OR_RETURN(Stream stream, Stream::Open(endpoint_, options_));
  EMBER_RETURN_IF_ERROR(stream.Send(request));
  EMBER_ASSIGN_OR_RETURN(v1::AgentResponse response, stream.Receive(timeout_ms));
  if (response.has_error()) return FromError(response.error());
  if (keep != nullptr) keep->emplace(std::move(stream));
  return response;
}

absl::StatusOr<v1::ReadyInfo> AgentClient::Ready() {
  v1::AgentRequest request;
  request.mutable_ready();
  EMBER_ASSIGN_OR_RETURN(v1::AgentResponse response, Call(request, options_.reply_timeout_ms));
  if (!response.has_ready()) return Unexpected(response, "ready");
  return response.ready();
}

absl::StatusOr<std::unique_ptr<ExecCall>> AgentClient::StartExec(const v1::ExecRequest& request) {
  v1::AgentRequest wrapped;
  *wrapped.mutable_exec() = request;
  std::optional<Stream> stream;
  EMBER_ASSIGN_OR_RETURN(v1::AgentResponse response,
                         Call(wrapped, options_.reply_timeout_ms, &stream));
  if (!response.has_exec_started()) return Unexpected(response, "exec_started");
  return std::make_unique<ExecCall>(std::move(*stream), response.exec_started(),
                                    WaitFor(request.timeout_ms()));
}

absl::StatusOr<ExecResult> AgentClient::Exec(const v1::ExecRequest& request,
                                             const OutputCallback& on_output) {
  EMBER_ASSIGN_OR_RETURN(std::unique_ptr<ExecCall> call, StartExec(request));
  ExecResult result;
  result.started = call->started();
  if (request.detach()) return result;
  EMBER_ASSIGN_OR_RETURN(result.exit, call->Wait(on_output));
  return result;
}

absl::Status AgentClient::Signal(const std::string& exec_id, int sig, bool all) {
  v1::AgentRequest request;
  request.mutable_signal()->set_exec_id(exec_id);
  request.mutable_signal()->set_signal(sig);
  request.mutable_signal()->set_all(all);
  EMBER_ASSIGN_OR_RETURN(v1::AgentResponse response, Call(request, options_.reply_timeout_ms));
  return response.has_ack() ? absl::OkStatus() : Unexpected(response, "ack");
}

absl::Status AgentClient::Resize(const std::string& exec_id, std::uint32_t rows,
                                 std::uint32_t cols) {
  v1::AgentRequest request;
  request.mutable_resize()->set_exec_id(exec_id);
  request.mutable_resize()->set_rows(rows);
  request.mutable_resize()->set_cols(cols);
  EMBER_ASSIGN_OR_RETURN(v1::AgentResponse response, Call(request, options_.reply_timeout_ms));
  return response.has_ack() ? absl::OkStatus() : Unexpected(response, "ack");
}

absl::Status AgentClient::StartHandler(const v1::StartHandlerRequest& request) {
  v1::AgentRequest wrapped;
  *wrapped.mutable_start_handler() = request;
  EMBER_ASSIGN_OR_RETURN(v1::AgentResponse response, Call(wrapped, options_.reply_timeout_ms));
  return response.has_ack() ? absl::OkStatus() : Unexpected(response, "ack");
}

absl::StatusOr<InvokeOutcome> AgentClient::Invoke(std::string payload, std::uint32_t timeout_ms) {
  v1::AgentRequest request;
  request.mutable_invoke()->set_payload(std::move(payload));
  request.mutable_invoke()->set_timeout_ms(timeout_ms);
  const int wait_ms = WaitFor(timeout_ms);
  auto deadline = Clock::now() + std::chrono::milliseconds(wait_ms);
  std::optional<Stream> stream;
  EMBER_ASSIGN_OR_RETURN(v1::AgentResponse response, Call(request, wait_ms, &stream));
  InvokeOutcome outcome;
  while (true) {
    if (!response.has_invoke_result()) return Unexpected(response, "invoke_result");
    const std::string& piece = response.invoke_result().output();
    if (piece.size() > options_.max_invoke_output_bytes - outcome.output.size()) {
      // Returning drops the stream, which closes the connection: the agent's writes fail.
      return absl::ResourceExhaustedError(
          "agent: invoke output exceeds " + std::to_string(options_.max_invoke_output_bytes) +
          " bytes (Options::max_invoke_output_bytes)");
    }
    outcome.output += piece;
    if (response.invoke_result().last()) {
      outcome.handler_us = response.invoke_result().handler_us();
      return outcome;
    }
    EMBER_ASSIGN_OR_RETURN(response, stream->Receive(wait_ms < 0 ? -1 : MsLeft(deadline)));
    if (response.has_error()) return FromError(response.error());
  }
}

absl::StatusOr<v1::PostRestoreResult> AgentClient::PostRestore(
    const v1::PostRestoreRequest& request) {
  v1::AgentRequest wrapped;
  *wrapped.mutable_post_restore() = request;
  EMBER_ASSIGN_OR_RETURN(v1::AgentResponse response, Call(wrapped, options_.reply_timeout_ms));
  if (!response.has_post_restore_result()) return Unexpected(response, "post_restore_result");
  return response.post_restore_result();
}

absl::Status AgentClient::Shutdown() {
  v1::AgentRequest request;
  request.mutable_shutdown();
  EMBER_ASSIGN_OR_RETURN(v1::AgentResponse response, Call(request, options_.reply_timeout_ms));
  return response.has_ack() ? absl::OkStatus() : Unexpected(response, "ack");
}

absl::StatusOr<ReadyListener> ReadyListener::ForVsock(const std::string& uds_path) {
  return At(uds_path + "_" + std::to_string(v1::AGENT_PORT_READY_EVENT));
}

absl::StatusOr<ReadyListener> ReadyListener::At(const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(sockaddr_un addr, base::UnixAddress(path));
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.Valid()) return base::ErrnoError("socket", "AF_UNIX");
  if (::bind(fd.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return base::ErrnoError("bind", path);
  }
  ReadyListener listener(std::move(fd), path);
  if (::listen(listener.fd_.Get(), 8) != 0) return base::ErrnoError("listen", path);
  return listener;
}

ReadyListener::~ReadyListener() {
  if (!path_.empty()) ::unlink(path_.c_str());
}

absl::StatusOr<v1::ReadyInfo> ReadyListener::Accept(int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  EMBER_RETURN_IF_ERROR(WaitReady(fd_.Get(), POLLIN, deadline, "ready event on " + path_));
  base::UniqueFd conn(::accept4(fd_.Get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!conn.Valid()) return base::ErrnoError("accept4", path_);
  control::FrameReader reader;
  EMBER_ASSIGN_OR_RETURN(std::string payload,
                         ReceiveFrame(conn.Get(), reader, MsLeft(deadline), "ready event"));
  v1::AgentEvent event;
  if (!event.ParseFromString(payload) || !event.has_ready()) {
    return absl::DataLossError("the ready event on " + path_ + " is no AgentEvent with ready");
  }
  return event.ready();
}

}  // namespace ember::agent_client
