#pragma once

#include "ember/v1/agent.pb.h"
#include "rootfs/agent/connection.h"
#include "rootfs/agent/process_table.h"

namespace ember::agent {

// Most bytes an Output frame carries (agent.proto).
inline constexpr std::size_t kMaxOutputChunk = 64 * 1024;

// Serves an ExecRequest on `conn` to its end: exec_started, output frames, exit (or error).
// `request` has its env and cwd defaults filled in already. Runs on the connection's thread
// and returns once the process is reaped (or, detached, handed to a reaper thread). A host
// that leaves before the exit takes the process with it: its process group is killed.
void RunExec(Connection& conn, const v1::ExecRequest& request, ProcessTable& processes);

}  // namespace ember::agent
