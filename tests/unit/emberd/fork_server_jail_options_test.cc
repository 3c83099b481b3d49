// The fork server (root, unfiltered) takes from emberd only the jailer options of one VM: an
// identity of the configured range, the snapshot group, the cgroup limits emberd sets, and the
// per-VM devices, taps and rlimits. A request asking for anything else is refused whole.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "tests/support/files.h"
#include "vmm/emberd/launcher.h"

namespace ember::emberd {
namespace {

using ::ember::testing::ReadFile;

class ForkServerJailOptionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The jailer stand-in records the command line the fork server gave it.
    jail_.jailer = temp_.path() + "/jailer";
    std::ofstream(jail_.jailer) << "#!/bin/sh\necho \"$@\" > " << args_ << "\n";
    ASSERT_EQ(::chmod(jail_.jailer.c_str(), 0755), 0);
    const std::string vmm = temp_.path() + "/vmm";
    std::ofstream(vmm) << "#!/bin/sh\nexit 0\n";
    ASSERT_EQ(::chmod(vmm.c_str(), 0755), 0);
    jail_.chroot_base = temp_.path() + "/jails";
    jail_.ids = JailIds{840000, 3};
    jail_.cgroups = JailCgroups{1, "ember-test", {"memory", "pids"}, {"/m", "/p"}, 2};
    auto launcher = ForkServerLauncher::Start(vmm, jail_);
    ASSERT_TRUE(launcher.ok()) << launcher.status();
    launcher_ = std::move(*launcher);
    null_.Reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
  }

  // Launches VM "vm1" with `options` (or, with `slot`, the VMM pool slot "1-0" running
  // `vmm_args`); the jailer's command line, or the launch's error.
  absl::StatusOr<std::string> Launch(std::vector<std::string> options, bool slot = false,
                                     std::vector<std::string> vmm_args = {}) {
    LaunchSpec spec;
    spec.vm_id = slot ? "1-0" : "vm1";
    spec.pool_slot = slot;
    spec.vmm_args = std::move(vmm_args);
    spec.vm_dir = temp_.path();
    spec.control_listen_fd = null_.Get();
    spec.stderr_fd = null_.Get();
    spec.jailer_args = std::move(options);
    ::unlink(args_.c_str());
    absl::StatusOr<pid_t> pid = launcher_->Launch(spec);
    if (!pid.ok()) return pid.status();
    int status = 0;
    ::waitpid(*pid, &status, 0);
    return ReadFile(args_);
  }

  ::ember::testing::ScopedTempDir temp_{"ember-fork-server-test"};
  const std::string args_ = temp_.path() + "/jailer-args";
  JailerConfig jail_;
  std::unique_ptr<ForkServerLauncher> launcher_;
  base::UniqueFd null_;
};

TEST_F(ForkServerJailOptionsTest, AVmIdentityOfTheRangeAndEmberdsLimitsAreHandedToTheJailer) {
  absl::StatusOr<std::string> args =
      Launch({"--uid", "840003", "--gid", "840003", "--supplementary-gid", "840000", "--cgroup",
              "memory.limit_in_bytes=1048576", "--device", "kvm"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_NE(args->find("--uid 840003 --gid 840003 --supplementary-gid 840000"),
            std::string::npos)
      << *args;
  EXPECT_NE(args->find("--cgroup memory.limit_in_bytes=1048576"), std::string::npos) << *args;
  EXPECT_NE(args->find("--cgroup-version 1 --parent-cgroup ember-test"), std::string::npos)
      << *args;
}

TEST_F(ForkServerJailOptionsTest, AnyOtherIdentityGroupLimitOrFlagIsRefused) {
  const std::vector<std::vector<std::string>> refused = {
      {"--uid", "840004", "--gid", "840004"},           // past the range
      {"--uid", "840000", "--gid", "840000"},           // the snapshot group is no VM's
      {"--uid", "0", "--gid", "0"},                     // root
      {"--uid", "840001", "--gid", "840002"},           // two ids
      {"--uid", "840001"},                              // no gid
      {"--uid", "840001", "--gid", "840001", "--uid", "840002"},
      {"--uid", "840001", "--gid", "840001", "--supplementary-gid", "0"},
      {"--uid", "840001", "--gid", "840001", "--cgroup", "memory.max=1"},  // v2's, not v1's
      {"--uid", "840001", "--gid", "840001", "--cgroup", "cgroup.procs=1"},
      {"--uid", "840001", "--gid", "840001", "--cgroup", "pids.max=-1"},
      {"--uid", "840001", "--gid", "840001", "--chroot-base-dir", "/"},
      {"--uid", "840001", "--gid", "840001", "--allow-root", "x"},
  };
  for (const std::vector<std::string>& options : refused) {
    absl::StatusOr<std::string> args = Launch(options);
    std::string joined;
    for (const std::string& option : options) joined += option + " ";
    EXPECT_EQ(args.status().code(), absl::StatusCode::kInternal) << joined;
  }
}

TEST_F(ForkServerJailOptionsTest, APoolSlotIsJailedApartFromTheVmsAndRunsOnlyPoolSlot) {
  const std::vector<std::string> options = {"--uid", "840001", "--gid", "840001", "--cgroup",
                                            "pids.max=64", "--device", "kvm"};
  absl::StatusOr<std::string> args = Launch(options, /*slot=*/true, {"--pool-slot"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_NE(args->find("--id 1-0 "), std::string::npos) << *args;
  EXPECT_NE(args->find("--chroot-base-dir " + jail_.chroot_base + "/_pool "), std::string::npos)
      << *args;
  EXPECT_NE(args->find("--parent-cgroup ember-test/_pool "), std::string::npos) << *args;
  EXPECT_NE(args->find("-- --pool-slot --control-fd 3"), std::string::npos) << *args;
  // A slot runs nothing else: a VM's arguments go to a slot only with its launch.
  EXPECT_EQ(Launch(options, true, {"--config-proto", "/config.pb"}).status().code(),
            absl::StatusCode::kInternal);
}

TEST_F(ForkServerJailOptionsTest, AClaimOfAProcessNotInThatSlotsJailIsRefusedAndMovesNothing) {
  // The slot's jail exists, but the process named is this test, whose root is the host's.
  const std::string slot_root = jail_.PoolJailRoot(temp_.path() + "/vmm", "1-0");
  ASSERT_EQ(std::system(("mkdir -p " + slot_root).c_str()), 0);
  base::UniqueFd self(static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0)));
  ASSERT_TRUE(self);
  LaunchSpec spec;
  spec.vm_id = "vm1";
  spec.vm_dir = temp_.path();
  spec.jailer_args = {"--uid", "840001", "--gid", "840001", "--device", "kvm"};
  absl::Status claimed = launcher_->ClaimSlot("1-0", self.Get(), spec);
  EXPECT_FALSE(claimed.ok());
  EXPECT_NE(claimed.message().find("the pool slot's process"), std::string::npos) << claimed;
  EXPECT_EQ(::access(slot_root.c_str(), F_OK), 0);
  EXPECT_NE(::access(jail_.JailRoot(temp_.path() + "/vmm", "vm1").c_str(), F_OK), 0);
}

}  // namespace
}  // namespace ember::emberd
