#include "rootfs/agent/process_table.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <limits>

#include "vmm/base/status.h"

namespace ember::agent {

absl::StatusOr<std::string> ProcessTable::Reserve(const std::string& id) {
  std::lock_guard lock(mutex_);
  std::string key = id;
  while (key.empty() || (id.empty() && entries_.contains(key))) {
    key = "exec-" + std::to_string(next_id_++);
  }
  if (!entries_.try_emplace(key).second) {
    return absl::AlreadyExistsError("exec_id \"" + key + "\" names a process that still runs");
  }
  return key;
}

void ProcessTable::Attach(const std::string& id, pid_t pid, int pidfd, int pty_master) {
  std::lock_guard lock(mutex_);
  Entry& entry = entries_[id];
  entry.pid = pid;
  entry.pidfd.Reset(::fcntl(pidfd, F_DUPFD_CLOEXEC, 3));
  if (pty_master >= 0) entry.pty_master.Reset(::fcntl(pty_master, F_DUPFD_CLOEXEC, 3));
}

void ProcessTable::Remove(const std::string& id) {
  std::lock_guard lock(mutex_);
  entries_.erase(id);
}

absl::Status ProcessTable::Signal(const std::string& id, int sig, bool all) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.pid < 0) {
    return absl::NotFoundError("no process with exec_id \"" + id + "\" runs");
  }
  return SignalProcess(it->second.pidfd.Get(), it->second.pid, sig, all);
}

absl::Status ProcessTable::Resize(const std::string& id, std::uint32_t rows, std::uint32_t cols) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.pid < 0) {
    return absl::NotFoundError("no process with exec_id \"" + id + "\" runs");
  }
  if (!it->second.pty_master.Valid()) {
    return absl::FailedPreconditionError("exec_id \"" + id + "\" has no terminal");
  }
  return SetWindowSize(it->second.pty_master.Get(), rows, cols);
}

absl::Status SignalProcess(int pidfd, pid_t pid, int sig, bool all) {
  if (sig < 0 || sig >= NSIG) {
    return absl::InvalidArgumentError("signal " + std::to_string(sig) + " is not a signal");
  }
  // The process leads its own group (Spawn makes a session); while it is unreaped its pid,
  // and so the group id, cannot be reused.
  int rc = all ? ::kill(-pid, sig) : static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig,
                                                                nullptr, 0));
  if (rc != 0 && errno != ESRCH) return base::ErrnoError(all ? "kill" : "pidfd_send_signal",
                                                         "pid " + std::to_string(pid));
  return absl::OkStatus();
}

absl::Status SetWindowSize(int pty_master, std::uint32_t rows, std::uint32_t cols) {
  constexpr std::uint32_t kMax = std::numeric_limits<unsigned short>::max();
  if (rows > kMax || cols > kMax) {
    return absl::InvalidArgumentError("window size " + std::to_string(rows) + "x" +
                                      std::to_string(cols) + " is out of range");
  }
  winsize size{};
  size.ws_row = static_cast<unsigned short>(rows);
  size.ws_col = static_cast<unsigned short>(cols);
  if (::ioctl(pty_master, TIOCSWINSZ, &size) != 0) {
    return base::ErrnoError("ioctl(TIOCSWINSZ)", "terminal");
  }
  return absl::OkStatus();
}

}  // namespace ember::agent
