#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

// ember-init keeps ember-agent running: it starts it, restarts it when it dies (with a growing
// delay, so a broken or missing agent cannot spin), and takes its clean exit (status 0) as
// the guest's request to power off.
namespace ember::init {

using Clock = std::chrono::steady_clock;

// The delay before each restart: 100 ms after the first failure, doubling up to 10 s, and
// back to 100 ms once a run lasted 10 s or more.
class RestartBackoff {
 public:
  static constexpr Clock::duration kFirstDelay = std::chrono::milliseconds(100);
  static constexpr Clock::duration kMaxDelay = std::chrono::seconds(10);
  static constexpr Clock::duration kStableRun = std::chrono::seconds(10);

  // The delay before the next start, after a run that lasted `ran`.
  Clock::duration Next(Clock::duration ran);

 private:
  Clock::duration delay_{0};
};

class AgentSupervisor {
 public:
  // The agent is started as `path` with `args`; PATH and HOME set, stdin /dev/null,
  // stdout/stderr the console, in a session of its own. Owned by PID 1's main loop.
  AgentSupervisor(std::string path, std::vector<std::string> args);

  // Starts the agent if it is not running and its start is due at `now`. A failed start
  // (no such file, not executable) is logged with the retry delay and counts as a failed run.
  void StartIfDue(Clock::time_point now);

  enum class ChildExit { kNotAgent, kAgentWillRestart, kAgentAskedToPowerOff };
  // For every child PID 1 reaps: whether it was the agent and what follows.
  ChildExit OnChildExit(pid_t pid, int wait_status, Clock::time_point now);

  // When the agent is to be started next; nullopt while it runs.
  [[nodiscard]] std::optional<Clock::time_point> next_start() const { return next_start_; }
  // The running agent's pid, or -1.
  [[nodiscard]] pid_t pid() const { return pid_; }

 private:
  // fork + execve; the child reports a failed execve's errno through a close-on-exec pipe.
  // Returns the pid, or -errno.
  pid_t Spawn() const;
  void ScheduleRestart(Clock::time_point now, const std::string& why);

  std::string path_;
  std::vector<std::string> args_;
  RestartBackoff backoff_;
  pid_t pid_ = -1;
  Clock::time_point started_;
  std::optional<Clock::time_point> next_start_;
};

}  // namespace ember::init
