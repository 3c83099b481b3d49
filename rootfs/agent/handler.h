#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ember/v1/agent.pb.h"
#include "rootfs/agent/spawn.h"

namespace ember::agent {

// The resident handler: one long-lived process serving Invoke requests over its stdin and
// stdout, each request and each result a 4-byte little-endian length and that many bytes
// (agent.proto, StartHandlerRequest). Its stderr is the agent's (the guest console). One
// invocation at a time. Any thread; one per agent.
class Handler {
 public:
  // Where the handler's spec comes from when nothing started it yet: the image's config.
  using DefaultSpec = std::function<absl::StatusOr<SpawnSpec>()>;
  // Sends one piece of a result to the host; an error means the host is gone.
  using SendPiece = std::function<absl::Status(const v1::InvokeResult&)>;

  // Starts the handler from `spec` (its stdio fds are set here). ALREADY_EXISTS if one runs.
  [[nodiscard]] absl::Status Start(SpawnSpec spec);

  // Sends `payload` and streams the result through `send`. The handler is started first if
  // none runs: from the spec it last ran with, else from `default_spec`. Errors:
  // FAILED_PRECONDITION while another invocation runs; DEADLINE_EXCEEDED after `timeout_ms`
  // (0: none), the handler then killed and started again; UNAVAILABLE when it died.
  [[nodiscard]] absl::Status Invoke(const std::string& payload, std::uint32_t timeout_ms,
                                    const DefaultSpec& default_spec, const SendPiece& send);

  // A signal to the handler (SignalRequest with an empty exec_id). NOT_FOUND if none runs.
  [[nodiscard]] absl::Status Signal(int sig, bool all);

  [[nodiscard]] bool Running();

 private:
  struct Process;
  // Starts `spec` and records it as current_ (mutex_ held).
  absl::Status StartLocked(const SpawnSpec& spec);
  // Kills the current process and waits until its reaper has dropped it.
  void Kill(const std::shared_ptr<Process>& process);

  std::mutex mutex_;
  std::shared_ptr<Process> current_;  // guarded by mutex_; null when none runs
  std::optional<SpawnSpec> spec_;     // guarded by mutex_; what the handler last ran as
  bool busy_ = false;                 // guarded by mutex_: an invocation is under way
};

}  // namespace ember::agent
