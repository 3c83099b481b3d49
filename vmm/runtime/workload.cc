#include "workload.h"

#include <unistd.h>

#include <cerrno>
#include <string>

#include "vmm/base/status.h"

namespace ember::runtime {
namespace {

constexpr int kStartTimeoutMs = 30'000;
// StdinData frames carry at most this much: well below the 1 MiB frame limit.
constexpr std::size_t kStdinChunk = 32 * 1024;

// Writes all of `data` to a blocking fd; a reader that went away (EPIPE) drops the rest, as
// a process writing to a closed pipe would lose it.
void WriteOut(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace

int ExitStatusCode(const v1::ExitStatus& exit) {
  if (exit.signal() > 0) return 128 + exit.signal();
  return exit.exit_code();
}

absl::StatusOr<std::unique_ptr<WorkloadRelay>> WorkloadRelay::Start(
    const agent_client::Endpoint& endpoint, v1::ExecRequest request, Stdio stdio) {
  request.set_stdin_stream(true);
  request.clear_stdin();
  EMBER_ASSIGN_OR_RETURN(agent_client::Stream stream,
                         agent_client::Stream::Open(endpoint, agent_client::Options{}));
  v1::AgentRequest exec;
  *exec.mutable_exec() = std::move(request);
  EMBER_RETURN_IF_ERROR(stream.Send(exec));
  EMBER_ASSIGN_OR_RETURN(v1::AgentResponse response, stream.Receive(kStartTimeoutMs));
  if (response.has_error()) {
    int code = response.error().code();
    if (code <= 0 || code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
      code = static_cast<int>(absl::StatusCode::kUnknown);
    }
    return absl::Status(
        static_cast<absl::StatusCode>(code),
        "the guest agent could not start the process: " + response.error().message());
  }
  if (!response.has_exec_started()) {
    return absl::DataLossError("the guest agent answered an Exec without exec_started");
  }
  return std::unique_ptr<WorkloadRelay>(
      new WorkloadRelay(std::move(stream), response.exec_started(), stdio));
}

void WorkloadRelay::AddPollFds(std::vector<pollfd>* fds) {
  fds->push_back({stream_.fd(), POLLIN, 0});
  poll_count_ = 1;
  if (stdin_open_) {
    fds->push_back({stdio_.in_fd, POLLIN, 0});
    poll_count_ = 2;
  }
}

absl::StatusOr<std::optional<int>> WorkloadRelay::OnReady(const std::vector<pollfd>& fds,
                                                          std::size_t first) {
  if (poll_count_ == 2 && fds[first + 1].revents != 0) {
    EMBER_RETURN_IF_ERROR(PumpStdin());
  }
  if (fds[first].revents != 0) return DrainAgent();
  return std::nullopt;
}

absl::Status WorkloadRelay::PumpStdin() {
  std::string buffer(kStdinChunk, '\0');
  ssize_t n = ::read(stdio_.in_fd, buffer.data(), buffer.size());
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return absl::OkStatus();
  v1::AgentRequest request;
  if (n <= 0) {  // end of file (or a read error, which ends stdin as well)
    stdin_open_ = false;
    request.mutable_stdin_data()->set_eof(true);
  } else {
    buffer.resize(static_cast<std::size_t>(n));
    request.mutable_stdin_data()->set_data(std::move(buffer));
  }
  // A process that no longer reads (it ended; the exit is on its way) loses its input, as a
  // pipe's reader that exited would.
  (void)stream_.Send(request);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<int>> WorkloadRelay::DrainAgent() {
  // Receive(0) reads what the socket holds; DeadlineExceeded means no whole frame is left.
  while (true) {
    absl::StatusOr<v1::AgentResponse> response = stream_.Receive(0);
    if (!response.ok()) {
      if (absl::IsDeadlineExceeded(response.status())) return std::nullopt;
      return response.status();
    }
    switch (response->kind_case()) {
      case v1::AgentResponse::kOutput:
        WriteOut(response->output().stream() == v1::Output::STDERR ? stdio_.err_fd : stdio_.out_fd,
                 response->output().data());
        break;
      case v1::AgentResponse::kExit:
        return ExitStatusCode(response->exit());
      case v1::AgentResponse::kError:
        return absl::Status(absl::StatusCode::kUnavailable,
                            "the guest agent: " + response->error().message());
      default:
        return absl::DataLossError("the guest agent sent an unexpected answer to an Exec");
    }
  }
}

absl::Status WorkloadRelay::Signal(int sig, bool all) {
  v1::AgentRequest request;
  request.mutable_signal()->set_exec_id(started_.exec_id());
  request.mutable_signal()->set_signal(sig);
  request.mutable_signal()->set_all(all);
  return stream_.Send(request);
}

absl::Status WorkloadRelay::Resize(std::uint32_t rows, std::uint32_t cols) {
  v1::AgentRequest request;
  request.mutable_resize()->set_exec_id(started_.exec_id());
  request.mutable_resize()->set_rows(rows);
  request.mutable_resize()->set_cols(cols);
  return stream_.Send(request);
}

}  // namespace ember::runtime
