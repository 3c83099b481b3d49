// ember-vmm's per-thread allowlists as tables: each compiles, each rule says why, and the
// vCPU thread's ioctls are filtered by request number. (What they allow at run time is tested
// on real KVM in tests/integration/seccomp_test.cc.)
#include "jailer/vmm_seccomp.h"
#include "jailer/seccomp_filter.h"

#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <linux/io_uring.h>
#include <linux/kvm.h>
#include <sys/socket.h>
#include <linux/userfaultfd.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <thread>

#include "tests/support/sanitizers.h"

namespace ember::jailer {
namespace {

VmmSeccompParams Params() {
  VmmSeccompParams params;
  params.kick_signal = 37;
  params.pid = 4242;
  params.snapshot_ioctls = {0xae80};  // any request number: the table takes what it is given
  return params;
}
const VmmSeccompParams kParams = Params();

const SyscallRule* Find(const SeccompPolicy& policy, const std::string& name) {
  auto it = std::find_if(policy.rules.begin(), policy.rules.end(),
                         [&](const SyscallRule& rule) { return rule.name == name; });
  return it == policy.rules.end() ? nullptr : &*it;
}

TEST(VmmSeccompPolicy, EveryThreadKindCompilesAndEveryRuleHasAReason) {
  for (VmmThreadKind kind : {VmmThreadKind::kVmm, VmmThreadKind::kVcpu}) {
    SeccompPolicy policy = VmmThreadPolicy(kind, kParams);
    EXPECT_EQ(policy.name, VmmThreadKindName(kind));
    for (const SyscallRule& rule : policy.rules) EXPECT_FALSE(rule.reason.empty()) << rule.name;
    auto filter = SeccompFilter::Build(policy, SeccompMode::kEnforce);
    ASSERT_TRUE(filter.ok()) << filter.status();
    auto program = filter->Compile();
    ASSERT_TRUE(program.ok()) << program.status();
    EXPECT_GT(program->size(), 0u);
  }
}

// Whether any of the policy's madvise rules admits `advice`.
bool AllowsMadvise(const SeccompPolicy& policy, uint64_t advice) {
  return std::any_of(policy.rules.begin(), policy.rules.end(), [&](const SyscallRule& rule) {
    return rule.name == "madvise" &&
           (rule.arg_index < 0 || std::find(rule.allowed_values.begin(), rule.allowed_values.end(),
                                            advice) != rule.allowed_values.end());
  });
}

// As a thread ends, ASan's runtime drops its signal stack and remaps its stack's shadow
// (madvise MADV_NOHUGEPAGE, MADV_DONTDUMP): a vCPU thread ending under its filter died of SIGSYS
// in sanitizer builds. Production filters must not gain any of it.
TEST(VmmSeccompPolicy, OnlySanitizerBuildsAllowTheSanitizerRuntimesOwnCalls) {
  for (VmmThreadKind kind :
       {VmmThreadKind::kVmm, VmmThreadKind::kVcpu, VmmThreadKind::kPageServer}) {
    SeccompPolicy policy = VmmThreadPolicy(kind, kParams);
    EXPECT_EQ(Find(policy, "sigaltstack") != nullptr, test::kSanitized) << policy.name;
    EXPECT_EQ(Find(policy, "sched_yield") != nullptr, test::kSanitized) << policy.name;
    EXPECT_EQ(AllowsMadvise(policy, MADV_NOHUGEPAGE), test::kSanitized) << policy.name;
    EXPECT_EQ(AllowsMadvise(policy, MADV_DONTDUMP), test::kSanitized) << policy.name;
    EXPECT_TRUE(AllowsMadvise(policy, MADV_DONTNEED)) << policy.name;
  }
}

TEST(VmmSeccompPolicy, VcpuIoctlsAreOnlyKvmRunGetRegsAndTheTapSetupOfNetActivation) {
  SeccompPolicy vcpu = VmmThreadPolicy(VmmThreadKind::kVcpu, kParams);
  const SyscallRule* ioctl = Find(vcpu, "ioctl");
  ASSERT_NE(ioctl, nullptr);
  EXPECT_EQ(ioctl->arg_index, 1);
  EXPECT_EQ(ioctl->allowed_values,
            (std::vector<uint64_t>{KVM_RUN, KVM_GET_REGS, TUNSETVNETHDRSZ, TUNSETOFFLOAD}));
}

TEST(VmmSeccompPolicy, VmmThreadIoctlsAreOnlyTheSnapshotReadsAndItSignalsOnlyTheKick) {
  SeccompPolicy vmm = VmmThreadPolicy(VmmThreadKind::kVmm, kParams);
  const SyscallRule* ioctl = Find(vmm, "ioctl");
  ASSERT_NE(ioctl, nullptr);
  EXPECT_EQ(ioctl->arg_index, 1);
  EXPECT_EQ(ioctl->allowed_values, kParams.snapshot_ioctls);
  const SyscallRule* tgkill = Find(vmm, "tgkill");
  ASSERT_NE(tgkill, nullptr);
  EXPECT_EQ(tgkill->arg_index, 2);
  EXPECT_EQ(tgkill->allowed_values, (std::vector<uint64_t>{37}));
  // Only to its own process: the tgid is the VMM's pid.
  EXPECT_EQ(tgkill->also_arg_index, 0);
  EXPECT_EQ(tgkill->also_arg_value, 4242u);
}

TEST(VmmSeccompPolicy, ThePageServersAbortSignalsOnlyItsOwnProcess) {
  const SeccompPolicy page_server = VmmThreadPolicy(VmmThreadKind::kPageServer, kParams);
  const SyscallRule* tgkill = Find(page_server, "tgkill");
  ASSERT_NE(tgkill, nullptr);
  EXPECT_EQ(tgkill->also_arg_index, 0);
  EXPECT_EQ(tgkill->also_arg_value, 4242u);
}

TEST(VmmSeccompPolicy, OnlyTheVmmThreadOpensSocketsAndOnlyUnixOnesForVsock) {
  SeccompPolicy vmm = VmmThreadPolicy(VmmThreadKind::kVmm, kParams);
  const SyscallRule* socket = Find(vmm, "socket");
  ASSERT_NE(socket, nullptr);
  EXPECT_EQ(socket->arg_index, 0);
  EXPECT_EQ(socket->allowed_values, (std::vector<uint64_t>{AF_UNIX}));
  SeccompPolicy vcpu = VmmThreadPolicy(VmmThreadKind::kVcpu, kParams);
  EXPECT_EQ(Find(vcpu, "socket"), nullptr);
  EXPECT_EQ(Find(vcpu, "connect"), nullptr);
}

// The ring is restricted to the block engine's operations when it is made; a thread that could
// make rings, or register anything but a drive swap's file, could build one without that fence.
TEST(VmmSeccompPolicy, OnlyTheVmmThreadEntersTheRingAndNoThreadMakesOrRegistersOne) {
  SeccompPolicy vmm = VmmThreadPolicy(VmmThreadKind::kVmm, kParams);
  EXPECT_NE(Find(vmm, "io_uring_enter"), nullptr);
  const SyscallRule* update = Find(vmm, "io_uring_register");
  ASSERT_NE(update, nullptr);
  EXPECT_EQ(update->arg_index, 1);
  EXPECT_EQ(update->allowed_values, (std::vector<uint64_t>{IORING_REGISTER_FILES_UPDATE}));
  for (VmmThreadKind kind :
       {VmmThreadKind::kVmm, VmmThreadKind::kVcpu, VmmThreadKind::kPageServer}) {
    SeccompPolicy policy = VmmThreadPolicy(kind, kParams);
    if (kind != VmmThreadKind::kVmm) {
      EXPECT_EQ(Find(policy, "io_uring_enter"), nullptr) << policy.name;
      EXPECT_EQ(Find(policy, "io_uring_register"), nullptr) << policy.name;
    }
    EXPECT_EQ(Find(policy, "io_uring_setup"), nullptr) << policy.name;
  }
}

TEST(VmmSeccompPolicy, NeitherThreadCanExecOrMapExecutableMemory) {
  for (VmmThreadKind kind : {VmmThreadKind::kVmm, VmmThreadKind::kVcpu}) {
    SeccompPolicy policy = VmmThreadPolicy(kind, kParams);
    for (const char* name : {"execve", "execveat", "fork", "clone", "ptrace"}) {
      EXPECT_EQ(Find(policy, name), nullptr) << policy.name << " allows " << name;
    }
    const SyscallRule* mmap = Find(policy, "mmap");
    ASSERT_NE(mmap, nullptr);
    EXPECT_EQ(mmap->arg_mask, static_cast<uint64_t>(PROT_EXEC));
    EXPECT_EQ(mmap->allowed_values, (std::vector<uint64_t>{0}));
  }
}

// A drive swap's new file comes as an fd on the control channel (issue 21): the VMM thread
// creates only files of its own and opens only directories and O_PATH references (a vsock
// socket file to connect to), never an existing file to read or write.
TEST(VmmSeccompPolicy, TheVmmThreadOpensNoExistingFileAndTakesDriveFilesAsFds) {
  SeccompPolicy vmm = VmmThreadPolicy(VmmThreadKind::kVmm, kParams);
  const SyscallRule* openat = Find(vmm, "openat");
  ASSERT_NE(openat, nullptr);
  EXPECT_EQ(openat->arg_index, 2);
  EXPECT_EQ(openat->allowed_values,
            (std::vector<uint64_t>{O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                                   O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                                   O_PATH | O_NOFOLLOW | O_CLOEXEC}));
  EXPECT_NE(Find(vmm, "recvmsg"), nullptr);
  const SyscallRule* fcntl = Find(vmm, "fcntl");
  ASSERT_NE(fcntl, nullptr);
  EXPECT_EQ(fcntl->arg_index, 1);
  EXPECT_EQ(fcntl->allowed_values, (std::vector<uint64_t>{F_GETFL}));
}

// The same at run time: a process under the VMM thread's filter that opens an existing file
// read-write, as a drive swap did before, dies of SIGSYS.
// A vCPU or page-server thread ends under its own filter (a VM stopping), in a child process.
// In sanitizer builds the runtime's own calls as the thread ends must pass its filter.
TEST(VmmSeccompPolicy, AThreadEndsUnderEachFilterWithoutDying) {
  for (VmmThreadKind kind :
       {VmmThreadKind::kVmm, VmmThreadKind::kVcpu, VmmThreadKind::kPageServer}) {
    const SeccompPolicy policy = VmmThreadPolicy(kind, kParams);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      rlimit no_core{0, 0};
      ::setrlimit(RLIMIT_CORE, &no_core);
      std::atomic<int> code{0};
      std::thread thread([&] {
        if (!InstallSeccompPolicy(policy, SeccompMode::kEnforce).ok()) code = 90;
      });
      thread.join();
      ::_exit(code);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_FALSE(WIFSIGNALED(status)) << policy.name << ": signal " << WTERMSIG(status);
    EXPECT_EQ(WEXITSTATUS(status), 0) << policy.name;
  }
}

// How a child process ends that installs `policy` (enforced) and then opens `path` with
// `flags`: exit 0 or 91 when the open was let through (done or failed), a signal otherwise.
int StatusOfOpenUnder(const SeccompPolicy& policy, const char* path, int flags) {
  pid_t pid = ::fork();
  if (pid == 0) {
    rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    if (!InstallSeccompPolicy(policy, SeccompMode::kEnforce).ok()) ::_exit(90);
    int fd = static_cast<int>(::syscall(SYS_openat, AT_FDCWD, path, flags));
    ::_exit(fd >= 0 ? 0 : 91);
  }
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, 0), pid);
  return status;
}

TEST(VmmSeccompPolicy, TheVmmThreadDiesOpeningAnExistingFileReadWrite) {
  char path[] = "/tmp/ember-vmm-seccomp-XXXXXX";
  int file = ::mkstemp(path);
  ASSERT_GE(file, 0);
  ::close(file);
  const SeccompPolicy vmm = VmmThreadPolicy(VmmThreadKind::kVmm, kParams);
  for (int flags : {O_RDWR | O_CLOEXEC, O_RDONLY | O_CLOEXEC, O_RDWR | O_CLOEXEC | O_DIRECT}) {
    const int status = StatusOfOpenUnder(vmm, path, flags);
    ASSERT_TRUE(WIFSIGNALED(status)) << "flags " << flags << ": exit " << WEXITSTATUS(status);
    EXPECT_EQ(WTERMSIG(status), SIGSYS) << "flags " << flags;
  }
  ::unlink(path);
}

// emberd's VMMs (ember-vmm --dirs-by-fd) hold every directory they write in open: their VMM
// thread opens no directory by name, only new files and O_PATH socket files.
TEST(VmmSeccompPolicy, WithDirectoriesByFdTheVmmThreadOpensNoDirectoryByName) {
  VmmSeccompParams params = Params();
  params.directories_by_fd = true;
  const SeccompPolicy vmm = VmmThreadPolicy(VmmThreadKind::kVmm, params);
  const SyscallRule* openat = Find(vmm, "openat");
  ASSERT_NE(openat, nullptr);
  EXPECT_EQ(openat->arg_index, 2);
  EXPECT_EQ(openat->allowed_values, (std::vector<uint64_t>{O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                                                           O_PATH | O_NOFOLLOW | O_CLOEXEC}));
  char dir[] = "/tmp/ember-vmm-seccomp-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  // What base::AtomicFile did to sync a directory it had no fd of.
  const int status = StatusOfOpenUnder(vmm, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ::rmdir(dir);
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGSYS);
}

TEST(VmmSeccompPolicy, PageServerCompilesAndItsIoctlsAreOnlyTheUserfaultfdFills) {
  SeccompPolicy server = VmmThreadPolicy(VmmThreadKind::kPageServer, kParams);
  EXPECT_EQ(server.name, "page-server");
  for (const SyscallRule& rule : server.rules) EXPECT_FALSE(rule.reason.empty()) << rule.name;
  auto filter = SeccompFilter::Build(server, SeccompMode::kEnforce);
  ASSERT_TRUE(filter.ok()) << filter.status();
  ASSERT_TRUE(filter->Compile().ok());
  const SyscallRule* ioctl = Find(server, "ioctl");
  ASSERT_NE(ioctl, nullptr);
  EXPECT_EQ(ioctl->arg_index, 1);
  EXPECT_EQ(ioctl->allowed_values,
            (std::vector<uint64_t>{UFFDIO_COPY, UFFDIO_ZEROPAGE, UFFDIO_WAKE}));
  // It answers faults only: no files, no sockets, no KVM, no other process.
  for (const char* name : {"openat", "socket", "execve", "clone", "pwrite64", "io_uring_enter"}) {
    EXPECT_EQ(Find(server, name), nullptr) << "the page server allows " << name;
  }
}

}  // namespace
}  // namespace ember::jailer
