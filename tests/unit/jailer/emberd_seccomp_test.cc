// emberd's allowlist as a table: it compiles, each rule says why, and the dangerous calls are
// absent or pinned by argument. (What it allows at run time is tested on a live emberd in
// tests/e2e/emberd_seccomp_test.py.)
#include "jailer/emberd_seccomp.h"

#include <errno.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <algorithm>

namespace ember::jailer {
namespace {

SeccompPolicy Policy(bool tcp) {
  EmberdSeccompParams params;
  params.tcp = tcp;
  return EmberdPolicy(params);
}

const SyscallRule* Find(const SeccompPolicy& policy, const std::string& name) {
  auto it = std::find_if(policy.rules.begin(), policy.rules.end(),
                         [&](const SyscallRule& rule) { return rule.name == name; });
  return it == policy.rules.end() ? nullptr : &*it;
}

TEST(EmberdSeccompPolicy, CompilesWithAndWithoutTcpAndEveryRuleHasAReason) {
  for (bool tcp : {false, true}) {
    SeccompPolicy policy = Policy(tcp);
    EXPECT_EQ(policy.name, "emberd");
    for (const SyscallRule& rule : policy.rules) EXPECT_FALSE(rule.reason.empty()) << rule.name;
    auto filter = SeccompFilter::Build(policy, SeccompMode::kEnforce);
    ASSERT_TRUE(filter.ok()) << filter.status();
    auto program = filter->Compile();
    ASSERT_TRUE(program.ok()) << program.status();
    EXPECT_GT(program->size(), 0u);
  }
}

TEST(EmberdSeccompPolicy, EachSyscallHasOneRule) {
  SeccompPolicy policy = Policy(true);
  for (const SyscallRule& rule : policy.rules) {
    long count = std::count_if(policy.rules.begin(), policy.rules.end(),
                               [&](const SyscallRule& other) { return other.name == rule.name; });
    EXPECT_EQ(count, 1) << rule.name;
  }
}

TEST(EmberdSeccompPolicy, CannotExecForkPtraceIoctlOrMount) {
  SeccompPolicy policy = Policy(true);
  for (const char* name : {"execve", "execveat", "fork", "vfork", "ptrace", "ioctl", "mount",
                           "unshare", "setns", "pivot_root", "process_vm_writev", "bpf"}) {
    EXPECT_EQ(Find(policy, name), nullptr) << "emberd allows " << name;
  }
}

TEST(EmberdSeccompPolicy, CloneOnlyMakesThreadsAndClone3FailsWithEnosys) {
  SeccompPolicy policy = Policy(false);
  const SyscallRule* clone = Find(policy, "clone");
  ASSERT_NE(clone, nullptr);
  EXPECT_EQ(clone->arg_index, 0);
  ASSERT_EQ(clone->allowed_values.size(), 1u);
  EXPECT_NE(clone->allowed_values[0] & CLONE_THREAD, 0u);
  EXPECT_NE(clone->allowed_values[0] & CLONE_VM, 0u);
  const SyscallRule* clone3 = Find(policy, "clone3");
  ASSERT_NE(clone3, nullptr);
  EXPECT_EQ(clone3->fail_errno, ENOSYS);
}

TEST(EmberdSeccompPolicy, SocketsAreUnixOnlyUnlessTcpIsOn) {
  SeccompPolicy without_tcp = Policy(false);
  const SyscallRule* unix_only = Find(without_tcp, "socket");
  ASSERT_NE(unix_only, nullptr);
  EXPECT_EQ(unix_only->arg_index, 0);
  EXPECT_EQ(unix_only->allowed_values, (std::vector<uint64_t>{AF_UNIX}));
  SeccompPolicy with_tcp = Policy(true);
  const SyscallRule* tcp = Find(with_tcp, "socket");
  ASSERT_NE(tcp, nullptr);
  EXPECT_EQ(tcp->allowed_values, (std::vector<uint64_t>{AF_UNIX, AF_INET, AF_INET6}));
}

TEST(EmberdSeccompPolicy, SignalsToOtherProcessesAreOnlyTermAndKill) {
  SeccompPolicy policy = Policy(false);
  for (const char* name : {"kill", "pidfd_send_signal"}) {
    const SyscallRule* rule = Find(policy, name);
    ASSERT_NE(rule, nullptr) << name;
    EXPECT_EQ(rule->arg_index, 1) << name;
    EXPECT_EQ(rule->allowed_values, (std::vector<uint64_t>{SIGKILL, SIGTERM})) << name;
  }
  const SyscallRule* tgkill = Find(policy, "tgkill");
  ASSERT_NE(tgkill, nullptr);
  EXPECT_EQ(tgkill->allowed_values, (std::vector<uint64_t>{SIGABRT}));
}

TEST(EmberdSeccompPolicy, MemoryIsNeverMappedExecutable) {
  SeccompPolicy policy = Policy(false);
  for (const char* name : {"mmap", "mprotect"}) {
    const SyscallRule* rule = Find(policy, name);
    ASSERT_NE(rule, nullptr) << name;
    EXPECT_EQ(rule->arg_index, 2) << name;
    EXPECT_EQ(rule->arg_mask, static_cast<uint64_t>(PROT_EXEC)) << name;
    EXPECT_EQ(rule->allowed_values, (std::vector<uint64_t>{0})) << name;
  }
  EXPECT_EQ(Find(policy, "pkey_mprotect"), nullptr);
}

TEST(EmberdSeccompPolicy, FilesAreOnlyGivenToRootAndTheSnapshotGroupAndOnlyWhenJailed) {
  SeccompPolicy unjailed = Policy(false);
  for (const char* name : {"fchown", "fchmod", "ftruncate", "chown", "fchownat", "lchown",
                           "link", "linkat"}) {
    EXPECT_EQ(Find(unjailed, name), nullptr) << "unjailed emberd allows " << name;
  }
  EmberdSeccompParams params;
  params.snapshot_gid = 23456;
  SeccompPolicy jailed = EmberdPolicy(params);
  const SyscallRule* fchown = Find(jailed, "fchown");
  ASSERT_NE(fchown, nullptr);
  EXPECT_EQ(fchown->arg_index, 1);
  EXPECT_EQ(fchown->allowed_values, (std::vector<uint64_t>{0}));
  EXPECT_EQ(fchown->also_arg_index, 2);
  EXPECT_EQ(fchown->also_arg_value, 23456u);
  const SyscallRule* fchmod = Find(jailed, "fchmod");
  ASSERT_NE(fchmod, nullptr);
  EXPECT_EQ(fchmod->allowed_values, (std::vector<uint64_t>{0440}));
  EXPECT_NE(Find(jailed, "ftruncate"), nullptr);
  for (const char* name : {"chown", "fchownat", "lchown", "link", "linkat"}) {
    EXPECT_EQ(Find(jailed, name), nullptr) << "jailed emberd allows " << name;
  }
  auto filter = SeccompFilter::Build(jailed, SeccompMode::kEnforce);
  ASSERT_TRUE(filter.ok()) << filter.status();
  EXPECT_TRUE(filter->Compile().ok());
}

}  // namespace
}  // namespace ember::jailer
