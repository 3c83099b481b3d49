#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ember/v1/agent.pb.h"
#include "vmm/base/unique_fd.h"
#include "vmm/control/frame.h"

namespace ember::agent_client {

// Where a guest's agent is reached.
struct Endpoint {
  // A Unix socket the agent listens on itself (ember-agent --unix, host tests) ...
  std::string unix_path;
  // ... or ember-vmm's vsock Unix-socket backend: its uds_path, and the guest port to ask for
  // with "CONNECT <port>\n" (answered "OK <host port>\n").
  std::string vsock_uds_path;
  std::uint32_t port = v1::AGENT_PORT_DEFAULT;

  static Endpoint Unix(std::string path) { return Endpoint{std::move(path), {}, 0}; }
  static Endpoint Vsock(std::string uds_path, std::uint32_t guest_port = v1::AGENT_PORT_DEFAULT) {
    return Endpoint{{}, std::move(uds_path), guest_port};
  }
};

struct Options {
  // Connecting, and the vsock handshake.
  int connect_timeout_ms = 5'000;
  // How long a request may wait for its answer. Exec and Invoke add their own timeout_ms to
  // it, and wait without limit when that is 0.
  int reply_timeout_ms = 30'000;
  // The most output one Invoke gathers from the agent, which runs in the guest and is not
  // trusted to stop: past it the call is RESOURCE_EXHAUSTED and its connection is closed.
  std::size_t max_invoke_output_bytes = std::size_t{64} << 20;
};

// One request's connection (agent.proto: one connection per request). Owned by one thread.
class Stream {
 public:
  [[nodiscard]] static absl::StatusOr<Stream> Open(const Endpoint& endpoint,
                                                   const Options& options);

  [[nodiscard]] absl::Status Send(const v1::AgentRequest& request);
  // The next response, waiting up to `timeout_ms` (-1: no limit). The agent closing the
  // connection first is UNAVAILABLE; a malformed frame is DATA_LOSS.
  [[nodiscard]] absl::StatusOr<v1::AgentResponse> Receive(int timeout_ms);
  // The raw socket, for tests that send what no client would.
  [[nodiscard]] int fd() const { return fd_.Get(); }

 private:
  explicit Stream(base::UniqueFd fd) : fd_(std::move(fd)) {}
  base::UniqueFd fd_;
  control::FrameReader reader_;
};

// Output of an Exec as it arrives: the stream and its bytes, in order.
using OutputCallback = std::function<void(v1::Output::Stream stream, std::string_view data)>;

// An Exec in progress: for stdin streamed from the host, signals and resizes on its own
// connection. From AgentClient::StartExec; owned by one thread.
class ExecCall {
 public:
  ExecCall(Stream stream, v1::ExecStarted started, int wait_ms)
      : stream_(std::move(stream)), started_(std::move(started)), wait_ms_(wait_ms) {}

  [[nodiscard]] const v1::ExecStarted& started() const { return started_; }
  [[nodiscard]] absl::Status SendStdin(std::string_view data, bool eof);
  [[nodiscard]] absl::Status Signal(int sig, bool all = false);
  [[nodiscard]] absl::Status Resize(std::uint32_t rows, std::uint32_t cols);
  // Passes output to `on_output` until the exit, which it returns. An `error` from the agent
  // is its status.
  [[nodiscard]] absl::StatusOr<v1::ExitStatus> Wait(const OutputCallback& on_output);

 private:
  Stream stream_;
  v1::ExecStarted started_;
  int wait_ms_;  // for the whole exec; -1 none
};

struct ExecResult {
  v1::ExecStarted started;
  v1::ExitStatus exit;  // empty when detached
};

struct InvokeOutcome {
  std::string output;
  std::uint64_t handler_us = 0;
};

// Typed calls to one agent, each on its own connection. An `error` response comes back as
// the status it carries (code and message). Thread-compatible; calls may run concurrently
// from several threads (each opens its own connection).
class AgentClient {
 public:
  explicit AgentClient(Endpoint endpoint, Options options = {})
      : endpoint_(std::move(endpoint)), options_(options) {}

  [[nodiscard]] absl::StatusOr<v1::ReadyInfo> Ready();
  // Runs `request` to its end; output goes to `on_output` (may be empty) as it comes.
  [[nodiscard]] absl::StatusOr<ExecResult> Exec(const v1::ExecRequest& request,
                                                const OutputCallback& on_output = {});
  // Starts `request` and returns once the agent said it runs.
  [[nodiscard]] absl::StatusOr<std::unique_ptr<ExecCall>> StartExec(
      const v1::ExecRequest& request);
  // To a process Exec started (empty `exec_id`: the resident handler).
  [[nodiscard]] absl::Status Signal(const std::string& exec_id, int sig, bool all = false);
  [[nodiscard]] absl::Status Resize(const std::string& exec_id, std::uint32_t rows,
                                    std::uint32_t cols);
  [[nodiscard]] absl::Status StartHandler(const v1::StartHandlerRequest& request);
  [[nodiscard]] absl::StatusOr<InvokeOutcome> Invoke(std::string payload,
                                                     std::uint32_t timeout_ms = 0);
  [[nodiscard]] absl::StatusOr<v1::PostRestoreResult> PostRestore(
      const v1::PostRestoreRequest& request);
  // Asks the guest to power off; returns once the agent acknowledged.
  [[nodiscard]] absl::Status Shutdown();

 private:
  // Sends `request` on a new connection and returns its first response (an `error` as its
  // status); keeps the connection in `keep` for the responses that follow.
  absl::StatusOr<v1::AgentResponse> Call(const v1::AgentRequest& request, int timeout_ms,
                                         std::optional<Stream>* keep = nullptr);
  int WaitFor(std::uint32_t request_timeout_ms) const;

  Endpoint endpoint_;
  Options options_;
};

// Receives the agent's ready event (AgentEvent on AGENT_PORT_READY_EVENT). Owns its
// listening socket and removes the socket file when destroyed.
class ReadyListener {
 public:
  // At "<uds_path>_1025", where ember-vmm's vsock backend delivers the guest's connections
  // to host port 1025.
  [[nodiscard]] static absl::StatusOr<ReadyListener> ForVsock(const std::string& uds_path);
  // At `path` (ember-agent --ready-unix PATH).
  [[nodiscard]] static absl::StatusOr<ReadyListener> At(const std::string& path);

  ReadyListener(ReadyListener&& other) noexcept
      : fd_(std::move(other.fd_)), path_(std::exchange(other.path_, {})) {}
  ReadyListener& operator=(ReadyListener&&) = delete;
  ~ReadyListener();

  // Waits up to `timeout_ms` for an agent to connect and say it is ready.
  [[nodiscard]] absl::StatusOr<v1::ReadyInfo> Accept(int timeout_ms);
  [[nodiscard]] const std::string& path() const { return path_; }
  // The listening socket (borrowed), for a caller that waits on it beside other fds and calls
  // Accept once it is readable, so the event's frame gets Accept's whole timeout.
  [[nodiscard]] int fd() const { return fd_.Get(); }

 private:
  ReadyListener(base::UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  base::UniqueFd fd_;
  std::string path_;
};

}  // namespace ember::agent_client
