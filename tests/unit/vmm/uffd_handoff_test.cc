// UffdHandoff's watch of the page-fault handler (issue 21): a VMM that cannot see the
// handler's pid (a jailed VMM lives in a pid namespace of its own) must still learn that the
// handler exited, or a vCPU faulting on a page nobody will copy waits for ever. Root: a pid
// namespace and userfaultfd.
#include "vmm/uffd_handoff.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "tests/support/files.h"
#include "vmm/base/unique_fd.h"

namespace ember::vmm {
namespace {

// What the VMM side (a grandchild in a new pid namespace) ends with.
constexpr int kNoticedTheExit = 0;
constexpr int kHandoffFailed = 2;
constexpr int kNothingToWatch = 3;
constexpr int kNeverNoticed = 4;

// The handler: listens at `path` itself (the peer a connection's SO_PEERCRED and
// SO_PEERPIDFD name is the process that called listen), says 'l' on `progress`, takes the
// connection and the uffd, says 't', then waits to be killed.
[[noreturn]] void BeTheHandler(const std::string& path, int progress) {
  base::UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  // sockaddr_un is the sockaddr of AF_UNIX.
  if (::bind(listener.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener.Get(), 1) != 0 || ::write(progress, "l", 1) != 1) {
    ::_exit(1);
  }
  base::UniqueFd conn(::accept4(listener.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  char buffer[4096];
  char control[CMSG_SPACE(sizeof(int))];
  iovec iov{buffer, sizeof(buffer)};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  if (!conn || ::recvmsg(conn.Get(), &message, 0) <= 0) ::_exit(1);
  // The rest of the mappings, so that the VMM sees everything taken.
  pollfd more{conn.Get(), POLLIN, 0};
  while (::poll(&more, 1, 200) > 0 && ::recv(conn.Get(), buffer, sizeof(buffer), 0) > 0) {
  }
  (void)!::write(progress, "t", 1);
  for (;;) ::pause();
}

// The VMM: in a pid namespace of its own, where the handler has no pid, hands its memory's
// uffd over and waits (at most 20 s) for its exit watch to fire.
[[noreturn]] void BeTheVmmInAPidNamespaceOfItsOwn(const std::string& socket_path) {
  if (::unshare(CLONE_NEWPID) != 0) ::_exit(kHandoffFailed);
  const pid_t vmm = ::fork();
  if (vmm < 0) ::_exit(kHandoffFailed);
  if (vmm > 0) {
    int status = 0;
    ::waitpid(vmm, &status, 0);
    ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : kHandoffFailed);
  }
  auto memory = base::GuestMemory::CreateAnonymous({{0, 1 << 20}});
  if (!memory.ok()) ::_exit(kHandoffFailed);
  auto handoff = UffdHandoff::Create(*memory, socket_path);
  if (!handoff.ok()) ::_exit(kHandoffFailed);
  if ((*handoff)->handler_pid() != 0) ::_exit(kHandoffFailed);  // not the case under test
  const UffdHandoff::ExitWatch watch = (*handoff)->exit_watch();
  if (watch.fd < 0) ::_exit(kNothingToWatch);
  pollfd exited{watch.fd, static_cast<short>(watch.events & 0xffff), 0};
  ::_exit(::poll(&exited, 1, 20'000) == 1 ? kNoticedTheExit : kNeverNoticed);
}

TEST(UffdHandoff, AVmmThatCannotSeeTheHandlersPidStillNoticesItExit) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a pid namespace and userfaultfd";
  testing::ScopedTempDir dir("ember-uffd-handoff");
  const std::string socket_path = dir.path() + "/handler.sock";
  int progress[2];
  ASSERT_EQ(::pipe2(progress, O_CLOEXEC), 0);
  base::UniqueFd progress_read(progress[0]);
  base::UniqueFd progress_write(progress[1]);
  const pid_t handler = ::fork();
  ASSERT_GE(handler, 0);
  if (handler == 0) BeTheHandler(socket_path, progress_write.Get());
  progress_write.Reset();
  // Reads the handler's next word within 20 s; 0 if none came.
  auto next = [&] {
    char byte = 0;
    pollfd said{progress_read.Get(), POLLIN, 0};
    return ::poll(&said, 1, 20'000) == 1 && ::read(progress_read.Get(), &byte, 1) == 1 ? byte
                                                                                       : '\0';
  };
  const bool listening = next() == 'l';
  pid_t vmm = -1;
  if (listening) {
    vmm = ::fork();
    if (vmm == 0) BeTheVmmInAPidNamespaceOfItsOwn(socket_path);
  }
  const bool handed_over = vmm > 0 && next() == 't';
  ::kill(handler, SIGKILL);
  ::waitpid(handler, nullptr, 0);
  ASSERT_TRUE(listening) << "the handler did not listen";
  int status = 0;
  ASSERT_EQ(::waitpid(vmm, &status, 0), vmm);
  ASSERT_TRUE(handed_over) << "the handler never got the uffd (VMM status " << status << ")";
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), kNoticedTheExit)
      << (WEXITSTATUS(status) == kNothingToWatch ? "nothing to watch: the handler's pid is "
                                                   "not visible and no pidfd came with the "
                                                   "connection"
                                                 : "the watch never fired");
}

}  // namespace
}  // namespace ember::vmm
