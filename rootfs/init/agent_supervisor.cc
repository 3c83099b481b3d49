#include "rootfs/init/agent_supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "rootfs/init/log.h"
#include "rootfs/init/unique_fd.h"

namespace ember::init {
namespace {

std::string DescribeStatus(int wait_status) {
  if (WIFSIGNALED(wait_status)) {
    return absl::StrCat("was killed by signal ", WTERMSIG(wait_status), " (",
                        strsignal(WTERMSIG(wait_status)), ")");
  }
  return absl::StrCat("exited with status ", WEXITSTATUS(wait_status));
}

}  // namespace

Clock::duration RestartBackoff::Next(Clock::duration ran) {
  if (ran >= kStableRun || delay_ == Clock::duration::zero()) {
    delay_ = kFirstDelay;
  } else {
    delay_ = std::min(delay_ * 2, kMaxDelay);
  }
  return delay_;
}

AgentSupervisor::AgentSupervisor(std::string path, std::vector<std::string> args)
    : path_(std::move(path)), args_(std::move(args)), next_start_(Clock::time_point()) {}

void AgentSupervisor::StartIfDue(Clock::time_point now) {
  if (pid_ > 0 || !next_start_ || now < *next_start_) return;
  next_start_.reset();
  started_ = now;
  pid_t pid = Spawn();
  if (pid < 0) {
    ScheduleRestart(now, absl::StrCat("cannot start ", path_, ": ", std::strerror(-pid)));
    return;
  }
  pid_ = pid;
  Log(absl::StrCat("started ", path_, " (pid ", pid_, ")"));
}

AgentSupervisor::ChildExit AgentSupervisor::OnChildExit(pid_t pid, int wait_status,
                                                        Clock::time_point now) {
  if (pid != pid_ || pid_ < 0) return ChildExit::kNotAgent;
  pid_ = -1;
  if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0) {
    Log(absl::StrCat(path_, " (pid ", pid, ") exited with status 0: powering off"));
    return ChildExit::kAgentAskedToPowerOff;
  }
  ScheduleRestart(now, absl::StrCat(path_, " (pid ", pid, ") ", DescribeStatus(wait_status)));
  return ChildExit::kAgentWillRestart;
}

void AgentSupervisor::ScheduleRestart(Clock::time_point now, const std::string& why) {
  Clock::duration delay = backoff_.Next(now - started_);
  next_start_ = now + delay;
  Log(absl::StrFormat("%s; restarting it in %.1f s", why,
                      std::chrono::duration<double>(delay).count()));
}

pid_t AgentSupervisor::Spawn() const {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return -errno;
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);
  // Everything execve needs is built before fork: the child only calls async-signal-safe
  // functions.
  std::vector<char*> argv;
  std::string path = path_;
  argv.push_back(path.data());
  std::vector<std::string> args = args_;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::string path_env = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  std::string home_env = "HOME=/";
  char* envp[] = {path_env.data(), home_env.data(), nullptr};

  pid_t pid = fork();
  if (pid < 0) return -errno;
  if (pid == 0) {
    setsid();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) {
      dup2(null_fd, STDIN_FILENO);
      if (null_fd != STDIN_FILENO) close(null_fd);
    }
    execve(path.c_str(), argv.data(), envp);
    int error = errno;
    [[maybe_unused]] ssize_t written = write(write_end.get(), &error, sizeof(error));
    _exit(127);
  }
  write_end.Reset();
  int error = 0;
  ssize_t got;
  do {
    got = read(read_end.get(), &error, sizeof(error));
  } while (got < 0 && errno == EINTR);
  if (got == static_cast<ssize_t>(sizeof(error))) {
    // The child ends at once; reap it here so the main loop never sees it.
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    return -error;
  }
  return pid;
}

}  // namespace ember::init
