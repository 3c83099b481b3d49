#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::runtime {

// How ember-runtime's commands reach a container's supervisor: a Unix socket in the
// container's state directory (0700, root's), one request line and one answer line per
// connection. Requests: "start", "kill SIG [all]", "pause", "resume", "status", "pids".
// Answers: "ok[ DATA]" or "error MESSAGE".

// The client side: sends `request` and returns the answer's DATA, or the error the
// supervisor sent (FailedPrecondition) or why it could not be asked (Unavailable).
[[nodiscard]] absl::StatusOr<std::string> AskSupervisor(const std::string& socket_path,
                                                        const std::string& request,
                                                        int timeout_ms = 60'000);

// The supervisor's listening socket at `path` (replacing a stale file), non-blocking.
[[nodiscard]] absl::StatusOr<base::UniqueFd> ListenForCommands(const std::string& path);

// Reads one request line from an accepted connection (waiting up to `timeout_ms`).
[[nodiscard]] absl::StatusOr<std::string> ReadCommand(int fd, int timeout_ms);
// Sends the answer: "ok DATA" when `answer` is OK, else "error MESSAGE".
void SendAnswer(int fd, const absl::StatusOr<std::string>& answer);

}  // namespace ember::runtime
