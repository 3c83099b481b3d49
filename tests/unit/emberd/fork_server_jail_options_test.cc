// The fork server (root, unfiltered) takes from emberd only the jailer options of one VM: an
// identity of the configured range, the snapshot group, the cgroup limits emberd sets, and the
// per-VM devices, taps and rlimits. A request asking for anything else is refused whole.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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

  // Launches VM "vm1" with `options`; the jailer's command line, or the launch's error.
  absl::StatusOr<std::string> Launch(std::vector<std::string> options) {
    LaunchSpec spec;
    spec.vm_id = "vm1";
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

}  // namespace
}  // namespace ember::emberd
