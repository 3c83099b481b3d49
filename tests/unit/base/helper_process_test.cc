#include "vmm/base/helper_process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace ember::base {
namespace {

// In the helper: sends the numbers of its open fds above stdio, each as an int.
void ReportOpenFds(UniqueFd socket) {
  std::vector<int> open;
  for (int fd = 3; fd < 1024; ++fd) {
    if (::fcntl(fd, F_GETFD) >= 0) open.push_back(fd);
  }
  (void)::send(socket.Get(), open.data(), open.size() * sizeof(int), MSG_NOSIGNAL);
}

pid_t WaitExit(pid_t pid, int* status) {
  pid_t got;
  do {
    got = ::waitpid(pid, status, 0);
  } while (got < 0 && errno == EINTR);
  return got;
}

TEST(HelperProcess, ServesItsEndAndExitsZeroWhenServeReturns) {
  absl::StatusOr<HelperProcess> helper =
      ForkHelperProcess("echo helper", "ember-echo", [](UniqueFd socket) {
        char buffer[64];
        ssize_t n = ::recv(socket.Get(), buffer, sizeof(buffer), 0);
        if (n > 0) (void)::send(socket.Get(), buffer, static_cast<std::size_t>(n), MSG_NOSIGNAL);
      });
  ASSERT_TRUE(helper.ok()) << helper.status();
  ASSERT_EQ(::send(helper->socket.Get(), "ping", 4, MSG_NOSIGNAL), 4);
  char reply[64] = {};
  ASSERT_EQ(::recv(helper->socket.Get(), reply, sizeof(reply), 0), 4);
  EXPECT_EQ(std::string(reply, 4), "ping");
  int status = 0;
  ASSERT_EQ(WaitExit(helper->pid, &status), helper->pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(HelperProcess, HoldsNoFdOfTheCallerButStdioAndItsSocket) {
  // Inherited without close-on-exec, as a lock or a service manager's fd would be.
  int leaked[2];
  ASSERT_EQ(::pipe(leaked), 0);
  UniqueFd leaked_read(leaked[0]);
  UniqueFd leaked_write(leaked[1]);
  absl::StatusOr<HelperProcess> helper = ForkHelperProcess("fd helper", nullptr, ReportOpenFds);
  ASSERT_TRUE(helper.ok()) << helper.status();
  int fds[1024] = {};
  ssize_t n = ::recv(helper->socket.Get(), fds, sizeof(fds), 0);
  ASSERT_GE(n, 0);
  std::vector<int> open(fds, fds + n / static_cast<ssize_t>(sizeof(int)));
  EXPECT_EQ(open, std::vector<int>{kHelperSocketFd});
  int status = 0;
  ASSERT_EQ(WaitExit(helper->pid, &status), helper->pid);
}

TEST(HelperProcess, DiesWithTheProcessThatForkedIt) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);
  // The parent, forked so that the test can kill it: it forks the helper, says its pid, waits.
  const pid_t parent = ::fork();
  ASSERT_GE(parent, 0);
  if (parent == 0) {
    absl::StatusOr<HelperProcess> helper =
        ForkHelperProcess("waiting helper", nullptr, [](UniqueFd) {
          while (true) ::pause();
        });
    if (!helper.ok()) ::_exit(1);
    (void)::write(write_end.Get(), &helper->pid, sizeof(helper->pid));
    while (true) ::pause();
  }
  write_end.Reset();
  pid_t helper_pid = 0;
  ASSERT_EQ(::read(read_end.Get(), &helper_pid, sizeof(helper_pid)),
            static_cast<ssize_t>(sizeof(helper_pid)));
  UniqueFd helper(static_cast<int>(::syscall(SYS_pidfd_open, helper_pid, 0)));
  ASSERT_TRUE(helper) << std::strerror(errno);
  ASSERT_EQ(::kill(parent, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(WaitExit(parent, &status), parent);
  pollfd exited{helper.Get(), POLLIN, 0};
  const int ready = ::poll(&exited, 1, 10000);
  if (ready != 1) ::syscall(SYS_pidfd_send_signal, helper.Get(), SIGKILL, nullptr, 0);
  EXPECT_EQ(ready, 1) << "the helper outlived the process that forked it by 10 s";
}

TEST(HelperProcess, SocketpairFailureNamesTheHelperAndKeepsErrno) {
  // No fd can be made: the limit is the lowest free fd number.
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  const int lowest_free = ::dup(0);
  ASSERT_GE(lowest_free, 0);
  ::close(lowest_free);
  rlimit tight = saved;
  tight.rlim_cur = static_cast<rlim_t>(lowest_free);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &tight), 0);
  absl::StatusOr<HelperProcess> helper =
      ForkHelperProcess("the test's helper", nullptr, [](UniqueFd) {});
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  ASSERT_FALSE(helper.ok());
  EXPECT_NE(helper.status().message().find("socketpair"), std::string::npos) << helper.status();
  EXPECT_NE(helper.status().message().find("the test's helper"), std::string::npos)
      << helper.status();
  EXPECT_NE(helper.status().message().find(std::strerror(EMFILE)), std::string::npos)
      << helper.status();
}

}  // namespace
}  // namespace ember::base
