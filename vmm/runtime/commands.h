#pragma once

#include "absl/status/statusor.h"
#include "cli.h"
#include "runtime_log.h"

namespace ember::runtime {

// Runs one parsed command line. Returns the process's exit code (0, or for `run` and a
// foreground `exec` the workload's status); an error is the message runc would give, which
// main reports and turns into exit code 1.
[[nodiscard]] absl::StatusOr<int> RunCommand(const Invocation& invocation, const RuntimeLog& log);

}  // namespace ember::runtime
