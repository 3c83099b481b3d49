#pragma once

#include <poll.h>

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ember/v1/agent.pb.h"
#include "vmm/agent_client/agent_client.h"

namespace ember::runtime {

// The host's stand-in for a process that runs in the guest: one agent Exec whose stdin is
// read from `in_fd` (sent as StdinData until its end of file) and whose output is written to
// `out_fd` / `err_fd` as it arrives. The fds are borrowed and stay the caller's. Driven by
// the caller's poll loop: PollFds() says what to wait for, OnReady() handles what poll
// returned. Owned by one thread.
class WorkloadRelay {
 public:
  struct Stdio {
    int in_fd = 0;
    int out_fd = 1;
    int err_fd = 2;
  };

  // Asks the agent to start `request` (with stdin streamed) and waits for exec_started. An
  // `error` answer (NOT_FOUND for a program the guest lacks) is its status.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<WorkloadRelay>> Start(
      const agent_client::Endpoint& endpoint, v1::ExecRequest request, Stdio stdio);

  // Appended to `fds`: the agent connection, and stdin while it is open. Each call replaces
  // what the previous one added for this relay.
  void AddPollFds(std::vector<pollfd>* fds);
  // Handles the entries AddPollFds added (at `first`, after poll). Returns the workload's exit
  // status once it ended (exit code, or 128 + the signal that ended it); nullopt while it
  // runs. An agent that breaks the connection before the exit is UNAVAILABLE.
  [[nodiscard]] absl::StatusOr<std::optional<int>> OnReady(const std::vector<pollfd>& fds,
                                                           std::size_t first);

  // To the process, on its Exec's connection (agent.proto: no answer; the exit tells).
  [[nodiscard]] absl::Status Signal(int sig, bool all);
  [[nodiscard]] absl::Status Resize(std::uint32_t rows, std::uint32_t cols);

  [[nodiscard]] const v1::ExecStarted& started() const { return started_; }

 private:
  WorkloadRelay(agent_client::Stream stream, v1::ExecStarted started, Stdio stdio)
      : stream_(std::move(stream)), started_(std::move(started)), stdio_(stdio) {}
  // Takes every whole frame the connection has; the exit status once it came.
  [[nodiscard]] absl::StatusOr<std::optional<int>> DrainAgent();
  [[nodiscard]] absl::Status PumpStdin();

  agent_client::Stream stream_;
  v1::ExecStarted started_;
  Stdio stdio_;
  bool stdin_open_ = true;
  std::size_t poll_count_ = 0;  // entries the last AddPollFds added
};

// An ExecStatus as a shell reports it: the exit code, or 128 + the signal.
[[nodiscard]] int ExitStatusCode(const v1::ExitStatus& exit);

}  // namespace ember::runtime
