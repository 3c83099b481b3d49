#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace ember::testing {

struct ProcessResult {
  int exit_code = -1;    // -1 when killed by a signal or timed out
  int term_signal = 0;   // the signal that ended it, if any
  bool timed_out = false;
  std::string out;       // everything it wrote to stdout
  std::string err;       // everything it wrote to stderr
};

// A child process with its stdout and stderr captured. Tests use it to run ember-vmm
// exactly as a user would.
class Process {
 public:
  // Starts `argv[0]` with `argv`; stdin is /dev/null.
  explicit Process(const std::vector<std::string>& argv);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // Reads output until stdout contains `text` or `timeout` passes; true when it appeared.
  bool WaitForOutput(const std::string& text, std::chrono::milliseconds timeout);
  void Signal(int sig) const;
  // Reads all output and reaps the child; kills it (SIGKILL) after `timeout`.
  ProcessResult Wait(std::chrono::milliseconds timeout);
  [[nodiscard]] pid_t pid() const { return pid_; }

 private:
  // Reads what is available within `timeout_ms`; false once both pipes are closed.
  bool Pump(int timeout_ms);

  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  ProcessResult result_;
  bool reaped_ = false;
};

// Runs the command to completion.
ProcessResult RunProcess(const std::vector<std::string>& argv,
                         std::chrono::milliseconds timeout = std::chrono::seconds(60));

// Path of a binary in build/bin.
std::string BinPath(const std::string& name);

// Writes `contents` to a fresh file in a temporary directory and returns its path.
std::string WriteTempFile(const std::string& name, const std::string& contents);

}  // namespace ember::testing
