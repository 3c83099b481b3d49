#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::agent {

// The processes Exec started, by exec_id, for SignalRequest and ResizeRequest from other
// connections. An entry goes before its process is reaped, so a signal never reaches a
// reused pid or process group. Any thread.
class ProcessTable {
 public:
  // Claims `id`, or a fresh "exec-N" when it is empty. ALREADY_EXISTS while a process of
  // that id runs.
  [[nodiscard]] absl::StatusOr<std::string> Reserve(const std::string& id);
  // Fills a reserved entry once its process runs; the fds are duplicated.
  void Attach(const std::string& id, pid_t pid, int pidfd, int pty_master);
  // Frees the entry (before its process is reaped).
  void Remove(const std::string& id);

  // `sig` to the process, or with `all` to its process group. NOT_FOUND for an id nobody
  // runs.
  [[nodiscard]] absl::Status Signal(const std::string& id, int sig, bool all);
  // The window size of a process's terminal. FAILED_PRECONDITION when it has none.
  [[nodiscard]] absl::Status Resize(const std::string& id, std::uint32_t rows,
                                    std::uint32_t cols);

 private:
  struct Entry {
    pid_t pid = -1;  // -1 while reserved
    base::UniqueFd pidfd;
    base::UniqueFd pty_master;
  };
  std::mutex mutex_;
  std::map<std::string, Entry> entries_;  // guarded by mutex_
  std::uint64_t next_id_ = 1;             // guarded by mutex_
};

// Sends `sig` through `pidfd`, or to the process group `pid` leads when `all`.
[[nodiscard]] absl::Status SignalProcess(int pidfd, pid_t pid, int sig, bool all);

// Sets a terminal's window size.
[[nodiscard]] absl::Status SetWindowSize(int pty_master, std::uint32_t rows, std::uint32_t cols);

}  // namespace ember::agent
