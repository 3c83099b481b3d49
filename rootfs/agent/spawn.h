#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "rootfs/agent/process_limits.h"
#include "vmm/base/unique_fd.h"

namespace ember::agent {

// What to run and how. The fds are borrowed for the Spawn call; -1 means /dev/null (stdin)
// or the agent's own stdout/stderr (the guest console).
struct SpawnSpec {
  std::vector<std::string> argv;  // argv[0] looked up in PATH as execvp does
  std::vector<std::string> env;   // "NAME=value"; PATH here, else the agent's, guides lookup
  std::string cwd;                // empty: "/"
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
  // stdin_fd is a terminal's slave side, to become the process's controlling terminal.
  bool controlling_tty = false;
  // Supplementary groups (else none), resource limits, no_new_privs and capabilities.
  ProcessLimits limits;
};

// A started process. The pidfd is how the agent signals it and learns of its end, free of
// pid reuse; whoever holds a Child must reap it (WaitExited) so that no zombie is left.
struct Child {
  pid_t pid = -1;
  base::UniqueFd pidfd;
};

// Starts `spec` as the leader of a new session (and so of its own process group), with the
// signal dispositions and mask a fresh process expects and no fd of the agent's but 0-2.
// Returns once the program has been exec'd: a program that cannot be found or run, a bad cwd
// or a refused uid/gid is an error naming the step, and leaves no process behind.
[[nodiscard]] absl::StatusOr<Child> Spawn(const SpawnSpec& spec);

// The end of a child: how it ended, from waitid.
struct ExitInfo {
  int exit_code = 0;  // 128 + signal when a signal ended it
  int signal = 0;
};

// Reaps a child whose pidfd reports it exited (blocks until it has).
[[nodiscard]] ExitInfo WaitExited(const Child& child);

// The program `argv0` names: itself when it has a '/', else the first executable regular
// file of that name along `path` (a PATH value).
[[nodiscard]] absl::StatusOr<std::string> FindProgram(const std::string& argv0,
                                                      const std::string& path);

}  // namespace ember::agent
