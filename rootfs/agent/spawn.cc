#include "rootfs/agent/spawn.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "vmm/base/status.h"

namespace ember::agent {
namespace {

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// The step of the child's set-up that failed, reported through the exec pipe.
enum class Step : int {
  kTty,
  kStdio,
  kRlimit,
  kBounding,
  kKeepCaps,
  kGroups,
  kGid,
  kUid,
  kCapset,
  kAmbient,
  kNoNewPrivs,
  kCwd,
  kExec
};

const char* StepName(Step step) {
  switch (step) {
    case Step::kTty: return "setting the controlling terminal";
    case Step::kStdio: return "setting up stdin/stdout/stderr";
    case Step::kRlimit: return "setrlimit";
    case Step::kBounding: return "dropping from the capability bounding set";
    case Step::kKeepCaps: return "prctl(PR_SET_KEEPCAPS)";
    case Step::kCapset: return "capset";
    case Step::kAmbient: return "raising an ambient capability";
    case Step::kNoNewPrivs: return "prctl(PR_SET_NO_NEW_PRIVS)";
    case Step::kGroups: return "setgroups";
    case Step::kGid: return "setgid";
    case Step::kUid: return "setuid";
    case Step::kCwd: return "chdir";
    case Step::kExec: return "execve";
  }
  return "?";
}

struct ChildFailure {
  Step step;
  int err;
};

[[noreturn]] void ReportAndExit(int report_fd, Step step) {
  ChildFailure failure{step, errno};
  (void)!::write(report_fd, &failure, sizeof(failure));
  ::_exit(127);
}

// Runs in the forked child: async-signal-safe calls only, since other agent threads may
// have held locks (malloc's among them) at the fork.
[[noreturn]] void ChildMain(const SpawnSpec& spec, const char* program, char* const* argv,
                            char* const* envp, int report_fd) {
  auto fail = [report_fd](Step step) { ReportAndExit(report_fd, step); };
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);  // SIGPIPE above all
  ::setsid();
  if (spec.controlling_tty && ::ioctl(spec.stdin_fd, TIOCSCTTY, 0) != 0) fail(Step::kTty);
  int null_fd = ::open("/dev/null", O_RDWR);
  int in = spec.stdin_fd >= 0 ? spec.stdin_fd : null_fd;
  int out = spec.stdout_fd >= 0 ? spec.stdout_fd : STDOUT_FILENO;
  int err = spec.stderr_fd >= 0 ? spec.stderr_fd : STDERR_FILENO;
  // dup2 onto itself keeps FD_CLOEXEC set, so a source already at 0-2 is moved up first.
  int sources[3] = {in, out, err};
  for (int target = 0; target < 3; ++target) {
    int fd = sources[target];
    if (fd >= 0 && fd <= STDERR_FILENO && fd != target) {
      sources[target] = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    }
  }
  for (int target = 0; target < 3; ++target) {
    if (sources[target] < 0) fail(Step::kStdio);
    if (sources[target] == target) {
      ::fcntl(target, F_SETFD, 0);
    } else if (::dup2(sources[target], target) < 0) {
      fail(Step::kStdio);
    }
  }
  const ProcessLimits& limits = spec.limits;
  // Before the uid changes: raising a hard limit needs CAP_SYS_RESOURCE.
  for (const ProcessLimits::Limit& limit : limits.rlimits) {
    if (::setrlimit(static_cast<__rlimit_resource_t>(limit.resource), &limit.value) != 0) {
      fail(Step::kRlimit);
    }
  }
  const std::optional<ProcessLimits::Capabilities>& caps = limits.capabilities;
  if (caps) {
    // Needs CAP_SETPCAP, so before the uid changes; and the permitted set is kept through it.
    for (int cap = 0; ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; ++cap) {
      if ((caps->bounding >> cap & 1) == 0 && ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
        fail(Step::kBounding);
      }
    }
    if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) fail(Step::kKeepCaps);
  }
  if (::geteuid() == 0) {
    if (::setgroups(limits.additional_gids.size(), limits.additional_gids.data()) != 0) {
      fail(Step::kGroups);
    }
    if (::setgid(spec.gid) != 0) fail(Step::kGid);
    if (::setuid(spec.uid) != 0) fail(Step::kUid);
  } else if (spec.gid != ::getegid() || spec.uid != ::geteuid() ||
             !limits.additional_gids.empty()) {
    // An agent that is not root (a host test) cannot change identity: say so rather than
    // run the program as someone else.
    errno = EPERM;
    fail(spec.gid != ::getegid()   ? Step::kGid
         : spec.uid != ::geteuid() ? Step::kUid
                                   : Step::kGroups);
  }
  if (caps) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; ++i) {
      data[i].effective = static_cast<std::uint32_t>(caps->effective >> (32 * i));
      data[i].permitted = static_cast<std::uint32_t>(caps->permitted >> (32 * i));
      data[i].inheritable = static_cast<std::uint32_t>(caps->inheritable >> (32 * i));
    }
    if (::syscall(SYS_capset, &header, data) != 0) fail(Step::kCapset);
    for (int cap = 0; cap < 64; ++cap) {
      if ((caps->ambient >> cap & 1) != 0 &&
          ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0) {
        fail(Step::kAmbient);
      }
    }
  }
  if (limits.no_new_privileges && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    fail(Step::kNoNewPrivs);
  }
  if (::chdir(spec.cwd.empty() ? "/" : spec.cwd.c_str()) != 0) fail(Step::kCwd);
  // Everything but 0-2 and the report pipe (close-on-exec) goes.
  if (report_fd > 3) ::close_range(3, static_cast<unsigned>(report_fd) - 1, 0);
  ::close_range(static_cast<unsigned>(report_fd) + 1, ~0U, 0);
  ::execve(program, argv, envp);
  ReportAndExit(report_fd, Step::kExec);
}

std::vector<char*> CStrings(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (const std::string& s : strings) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

std::string PathOf(const std::vector<std::string>& env) {
  for (const std::string& entry : env) {
    if (entry.rfind("PATH=", 0) == 0) return entry.substr(5);
  }
  const char* own = std::getenv("PATH");
  return own != nullptr ? own : kDefaultPath;
}

}  // namespace

absl::StatusOr<std::string> FindProgram(const std::string& argv0, const std::string& path) {
  if (argv0.empty()) return absl::InvalidArgumentError("argv[0] is empty");
  if (argv0.find('/') != std::string::npos) return argv0;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + argv0;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    start = end + 1;
  }
  return absl::NotFoundError("\"" + argv0 + "\" is not an executable file in PATH " + path);
}

absl::StatusOr<Child> Spawn(const SpawnSpec& spec) {
  if (spec.argv.empty()) return absl::InvalidArgumentError("argv is empty");
  // Everything the child needs is made before the fork: it may not allocate.
  EMBER_ASSIGN_OR_RETURN(std::string program, FindProgram(spec.argv[0], PathOf(spec.env)));
  std::vector<char*> argv = CStrings(spec.argv);
  std::vector<char*> envp = CStrings(spec.env);
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return base::ErrnoError("pipe2", "exec report");
  base::UniqueFd report_read(report[0]);
  base::UniqueFd report_write(report[1]);

  pid_t pid = ::fork();
  if (pid < 0) return base::ErrnoError("fork", spec.argv[0]);
  if (pid == 0) ChildMain(spec, program.c_str(), argv.data(), envp.data(), report_write.Get());
  report_write.Reset();

  Child child;
  child.pid = pid;
  // The pid cannot be reused before we reap it, so this names our child for good.
  child.pidfd.Reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  int open_errno = errno;
  ChildFailure failure{};
  ssize_t n;
  do {
    n = ::read(report_read.Get(), &failure, sizeof(failure));
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof(failure)) || !child.pidfd.Valid()) {
    // Without a pidfd the program, exec'd or not, cannot be tracked: it goes.
    if (!child.pidfd.Valid()) ::kill(pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!child.pidfd.Valid()) return base::ErrnoError(open_errno, "pidfd_open", spec.argv[0]);
    std::string object = spec.argv[0];
    if (failure.step == Step::kCwd) object = spec.cwd;
    if (failure.step == Step::kUid) object = "uid " + std::to_string(spec.uid);
    if (failure.step == Step::kGid) object = "gid " + std::to_string(spec.gid);
    if (failure.step == Step::kExec) object = program;
    absl::Status error = base::ErrnoError(failure.err, StepName(failure.step), object);
    return absl::Status(error.code(), "cannot start " + spec.argv[0] + ": " +
                                          std::string(error.message()));
  }
  return child;
}

ExitInfo WaitExited(const Child& child) {
  siginfo_t info{};
  while (::waitid(P_PIDFD, static_cast<id_t>(child.pidfd.Get()), &info, WEXITED) != 0) {
    if (errno != EINTR) {
      // Someone else reaped it: nothing is known of its end, and no zombie is left.
      return ExitInfo{};
    }
  }
  ExitInfo exit;
  if (info.si_code == CLD_EXITED) {
    exit.exit_code = info.si_status;
  } else {
    exit.signal = info.si_status;
    exit.exit_code = 128 + info.si_status;
  }
  return exit;
}

}  // namespace ember::agent
