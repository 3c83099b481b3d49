#pragma once

#include "absl/status/status.h"
#include "ember/v1/agent.pb.h"

namespace ember::agent {

// Writes the request's files (ExecRequest fields 23-25) into the guest before its process
// starts. InvalidArgument for mismatched lists or a path that is not absolute or has "..";
// the errno of the step that failed otherwise. The agent's thread, before the fork.
[[nodiscard]] absl::Status WriteExecFiles(const v1::ExecRequest& request);

}  // namespace ember::agent
