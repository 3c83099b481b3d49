// Each filter is installed in a forked child, never in the test process itself; the parent
// judges by how the child ended. no_new_privs makes this work without root.
#include "jailer/seccomp_filter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <thread>

#include "tests/support/sanitizers.h"

namespace ember::jailer {
namespace {

using ::testing::HasSubstr;

// What every test policy needs for the child to report and leave.
SeccompPolicy TestPolicy(std::vector<SyscallRule> extra = {}) {
  SeccompPolicy policy{
      "test",
      {Allow("write", "the child reports through a pipe"),
       Allow("exit_group", "the child leaves with _exit()"), Allow("exit", "thread exit"),
       Allow("rt_sigreturn", "return from a signal handler"),
       Allow("brk", "free() may trim the heap once the filter is loaded"),
       Allow("munmap", "free() may unmap a large chunk"),
       Allow("madvise", "free() may return pages")}};
  if constexpr (test::kSanitized) {
    policy.rules.push_back(
        Allow("sigaltstack", "sanitizer build: the runtime's _exit drops its signal stack"));
  }
  policy.rules.insert(policy.rules.end(), extra.begin(), extra.end());
  return policy;
}

struct ChildEnd {
  bool exited = false;
  int code = -1;    // when exited
  int signal = 0;   // when killed
  std::string out;  // what the child wrote to its pipe
};

// Forks; the child installs `policy` in `mode`, runs `body` and exits 0. Exit 90 means the
// filter did not install, so the test sees that rather than a false pass.
ChildEnd RunFiltered(const SeccompPolicy& policy, SeccompMode mode,
                     const std::function<void(int out_fd)>& body) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) std::abort();
  pid_t pid = fork();
  if (pid == 0) {
    close(pipe_fds[0]);
    struct rlimit no_core {
      0, 0
    };
    setrlimit(RLIMIT_CORE, &no_core);  // SIGSYS would otherwise dump core.
    if (!InstallSeccompPolicy(policy, mode).ok()) _exit(90);
    body(pipe_fds[1]);
    _exit(0);
  }
  close(pipe_fds[1]);
  ChildEnd end;
  char buf[256];
  ssize_t n;
  while ((n = read(pipe_fds[0], buf, sizeof(buf))) > 0) end.out.append(buf, static_cast<size_t>(n));
  close(pipe_fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  end.exited = WIFEXITED(status);
  if (end.exited) end.code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) end.signal = WTERMSIG(status);
  return end;
}

void WriteMarker(int fd, const char* marker) { (void)!write(fd, marker, strlen(marker)); }

TEST(SeccompFilter, AllowedSyscallRuns) {
  ChildEnd end =
      RunFiltered(TestPolicy(), SeccompMode::kEnforce, [](int fd) { WriteMarker(fd, "alive"); });
  EXPECT_TRUE(end.exited);
  EXPECT_EQ(end.code, 0);
  EXPECT_EQ(end.out, "alive");
}

TEST(SeccompFilter, ForbiddenSyscallKillsTheProcessWithSigsys) {
  ChildEnd end = RunFiltered(TestPolicy(), SeccompMode::kEnforce, [](int fd) {
    syscall(SYS_getppid);  // not in the policy
    WriteMarker(fd, "survived");
  });
  EXPECT_FALSE(end.exited) << "exit code " << end.code;
  EXPECT_EQ(end.signal, SIGSYS);
  EXPECT_EQ(end.out, "");
}

TEST(SeccompFilter, ForbiddenSocketCallKillsTheProcessWithSigsys) {
  ChildEnd end = RunFiltered(TestPolicy(), SeccompMode::kEnforce, [](int fd) {
    syscall(SYS_socket, 1 /* AF_UNIX */, 1 /* SOCK_STREAM */, 0);
    WriteMarker(fd, "survived");
  });
  EXPECT_EQ(end.signal, SIGSYS);
  EXPECT_EQ(end.out, "");
}

TEST(SeccompFilter, LogModeLetsAForbiddenSyscallRun) {
  ChildEnd end = RunFiltered(TestPolicy(), SeccompMode::kLog, [](int fd) {
    long ppid = syscall(SYS_getppid);
    WriteMarker(fd, ppid > 0 ? "survived" : "failed");
  });
  EXPECT_TRUE(end.exited) << "signal " << end.signal;
  EXPECT_EQ(end.code, 0);
  EXPECT_EQ(end.out, "survived");
}

TEST(SeccompFilter, ArgumentRuleAllowsListedIoctlRequest) {
  SeccompPolicy policy =
      TestPolicy({AllowIfArg("ioctl", "FIONREAD on the report pipe", 1, {FIONREAD})});
  ChildEnd end = RunFiltered(policy, SeccompMode::kEnforce, [](int fd) {
    int queued = -1;
    WriteMarker(fd, ioctl(fd, FIONREAD, &queued) == 0 ? "ok" : "failed");
  });
  EXPECT_TRUE(end.exited) << "signal " << end.signal;
  EXPECT_EQ(end.out, "ok");
}

TEST(SeccompFilter, ArgumentRuleKillsOnUnlistedIoctlRequest) {
  SeccompPolicy policy =
      TestPolicy({AllowIfArg("ioctl", "FIONREAD on the report pipe", 1, {FIONREAD})});
  ChildEnd end = RunFiltered(policy, SeccompMode::kEnforce, [](int fd) {
    int on = 1;
    ioctl(fd, FIONBIO, &on);
    WriteMarker(fd, "survived");
  });
  EXPECT_EQ(end.signal, SIGSYS);
  EXPECT_EQ(end.out, "");
}

TEST(SeccompFilter, SecondArgumentConditionAllowsTgkillOnlyWithinTheCallersProcess) {
  // The child's own pid is what the VMM's policy is built with (vmm/seccomp.cc).
  pid_t sibling = fork();
  if (sibling == 0) {
    pause();
    _exit(0);
  }
  ASSERT_GT(sibling, 0);
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  pid_t pid = fork();
  if (pid == 0) {
    struct rlimit no_core {
      0, 0
    };
    setrlimit(RLIMIT_CORE, &no_core);
    signal(SIGUSR2, SIG_IGN);
    pid_t self = getpid();  // single-threaded: also its tid
    SeccompPolicy policy = TestPolicy({AndArgIs(
        AllowIfArg("tgkill", "own threads only", 2, {SIGUSR2}), 0,
        static_cast<uint64_t>(self))});
    if (!InstallSeccompPolicy(policy, SeccompMode::kEnforce).ok()) _exit(90);
    if (syscall(SYS_tgkill, self, self, SIGUSR2) != 0) _exit(91);
    WriteMarker(pipe_fds[1], "own;");
    syscall(SYS_tgkill, sibling, sibling, SIGUSR2);  // another process: SIGSYS
    WriteMarker(pipe_fds[1], "other");
    _exit(0);
  }
  close(pipe_fds[1]);
  std::string out;
  char buf[64];
  ssize_t n;
  while ((n = read(pipe_fds[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(pipe_fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  kill(sibling, SIGKILL);
  waitpid(sibling, nullptr, 0);
  EXPECT_EQ(out, "own;");
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGSYS);
}

TEST(SeccompFilter, FailWithRuleFailsTheCallWithItsErrnoAndTheProcessLives) {
  SeccompPolicy policy = TestPolicy({FailWith("getppid", "test", ENOSYS)});
  ChildEnd end = RunFiltered(policy, SeccompMode::kEnforce, [](int fd) {
    long rc = syscall(SYS_getppid);
    WriteMarker(fd, rc == -1 && errno == ENOSYS ? "enosys" : "ran");
  });
  EXPECT_TRUE(end.exited) << "signal " << end.signal;
  EXPECT_EQ(end.out, "enosys");
}

TEST(SeccompFilter, InstallOnAllThreadsFiltersAThreadStartedBefore) {
  ChildEnd end;
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(pipe_fds[0]);
    struct rlimit no_core {
      0, 0
    };
    setrlimit(RLIMIT_CORE, &no_core);
    // A thread that exists before the filter calls getppid once the main thread has
    // installed it on every thread; a filter on the main thread alone would let it through.
    std::atomic<bool> installed{false};
    std::thread other([&] {
      while (!installed.load()) {
      }
      syscall(SYS_getppid);
      WriteMarker(pipe_fds[1], "survived");
    });
    auto filter = SeccompFilter::Build(TestPolicy({Allow("futex", "join")}), SeccompMode::kEnforce);
    if (!filter.ok()) _exit(90);
    auto program = filter->Compile();
    if (!program.ok() || !program->InstallOnAllThreads().ok()) _exit(90);
    installed.store(true);
    other.join();
    _exit(0);
  }
  close(pipe_fds[1]);
  char buf[64];
  ssize_t n;
  while ((n = read(pipe_fds[0], buf, sizeof(buf))) > 0) end.out.append(buf, static_cast<size_t>(n));
  close(pipe_fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGSYS);
  EXPECT_EQ(end.out, "");
}

TEST(SeccompFilter, UnknownSyscallNameIsRefusedBeforeInstalling) {
  auto filter =
      SeccompFilter::Build(TestPolicy({Allow("no_such_syscall", "typo")}), SeccompMode::kEnforce);
  ASSERT_FALSE(filter.ok());
  EXPECT_EQ(filter.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(filter.status().message()), HasSubstr("\"no_such_syscall\""));
}

TEST(SeccompFilter, ArgumentRuleWithoutValuesIsRefused) {
  auto filter = SeccompFilter::Build(TestPolicy({AllowIfArg("ioctl", "no values", 1, {})}),
                                     SeccompMode::kEnforce);
  EXPECT_EQ(filter.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SeccompFilter, EveryRuleShowsUpInTheProgram) {
  auto small = SeccompFilter::Build(TestPolicy(), SeccompMode::kEnforce);
  auto larger = SeccompFilter::Build(
      TestPolicy({Allow("read", "r"), AllowIfArg("ioctl", "two requests", 1, {FIONREAD, FIONBIO})}),
      SeccompMode::kEnforce);
  ASSERT_TRUE(small.ok() && larger.ok());
  auto small_count = small->InstructionCount();
  auto larger_count = larger->InstructionCount();
  ASSERT_TRUE(small_count.ok() && larger_count.ok()) << small_count.status();
  EXPECT_GT(*small_count, 0u);
  EXPECT_GT(*larger_count, *small_count);
}

TEST(SeccompFilter, ParsesModeNames) {
  EXPECT_EQ(ParseSeccompMode("enforce").value_or(SeccompMode::kLog), SeccompMode::kEnforce);
  EXPECT_EQ(ParseSeccompMode("log").value_or(SeccompMode::kEnforce), SeccompMode::kLog);
  EXPECT_EQ(ParseSeccompMode("off").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ember::jailer
