// ember-vmm's per-thread allowlists as tables: each compiles, each rule says why, and the
// vCPU thread's ioctls are filtered by request number. (What they allow at run time is tested
// on real KVM in tests/integration/seccomp_test.cc.)
#include "jailer/vmm_seccomp.h"

#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <linux/io_uring.h>
#include <linux/kvm.h>
#include <sys/socket.h>
#include <linux/userfaultfd.h>
#include <sys/mman.h>

#include <algorithm>

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
