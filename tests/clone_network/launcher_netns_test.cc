// emberd's fork server starting a VMM inside a clone network (needs root): unjailed, the
// process is spawned in the namespace; only namespaces of the clone network directory are
// accepted. (Jailed, ember-jailer joins it: restore_test.cc runs that path.)
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>

#include "tests/clone_network/world.h"
#include "tests/support/files.h"
#include "vmm/emberd/clone_network/clone_network.h"
#include "vmm/emberd/launcher.h"

namespace ember::testing {
namespace {

using emberd::CloneNetwork;
using emberd::CloneNetworkSpec;
using emberd::ForkServerLauncher;
using emberd::LaunchSpec;

class LauncherNetns : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = EnterTestHost(); !why.empty()) GTEST_SKIP() << why;
    dir_ = std::make_unique<ScopedTempDir>("fnnet-launch");
    null_.Reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
  }

  // Runs `sh -c "readlink /proc/self/ns/net > OUT"` through `launcher` in `netns_path`; what
  // it wrote, or the launch's error.
  absl::StatusOr<std::string> NamespaceOfSpawned(ForkServerLauncher& launcher,
                                                 const std::string& netns_path) {
    const std::string out = dir_->path() + "/ns.txt";
    LaunchSpec spec;
    spec.vm_id = "probe";
    spec.vm_dir = dir_->path();
    spec.vmm_args = {"-c", "readlink /proc/self/ns/net > " + out};
    spec.control_listen_fd = null_.Get();
    spec.stderr_fd = null_.Get();
    spec.netns_path = netns_path;
    absl::StatusOr<pid_t> pid = launcher.Launch(spec);
    if (!pid.ok()) return pid.status();
    int status = 0;
    EXPECT_EQ(::waitpid(*pid, &status, 0), *pid);
    return ReadFile(out);
  }

  std::unique_ptr<ScopedTempDir> dir_;
  base::UniqueFd null_;
};

TEST_F(LauncherNetns, UnjailedVmmIsSpawnedInsideItsCloneNetwork) {
  CloneNetworkSpec spec;
  spec.tap_name = "tap0";
  spec.mount_path = dir_->path() + "/netns/clone";
  absl::StatusOr<CloneNetwork> clone = CloneNetwork::Prepare(std::move(spec));
  ASSERT_TRUE(clone.ok()) << clone.status();
  auto launcher = ForkServerLauncher::Start("/bin/sh", std::nullopt, dir_->path() + "/netns");
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  absl::StatusOr<std::string> inside =
      NamespaceOfSpawned(**launcher, dir_->path() + "/netns/clone");
  ASSERT_TRUE(inside.ok()) << inside.status();
  EXPECT_EQ(*inside, "net:[" + std::to_string(NetnsInode(clone->netns_fd())) + "]\n");
  // Without a path: emberd's own namespace.
  absl::StatusOr<std::string> own = NamespaceOfSpawned(**launcher, "");
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_NE(*own, *inside);
}

TEST_F(LauncherNetns, NamespacesOutsideTheCloneNetworkDirectoryAreRefused) {
  auto launcher = ForkServerLauncher::Start("/bin/sh", std::nullopt, dir_->path() + "/netns");
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  for (const std::string& path :
       {std::string("/proc/1/ns/net"), dir_->path() + "/netns", dir_->path() + "/netns/",
        dir_->path() + "/netns/..", dir_->path() + "/netns/a/b", dir_->path() + "/netnsx/a"}) {
    absl::StatusOr<std::string> result = NamespaceOfSpawned(**launcher, path);
    EXPECT_FALSE(result.ok()) << path;
  }
}

TEST_F(LauncherNetns, WithoutACloneNetworkDirectoryNoNamespaceIsAccepted) {
  auto launcher = ForkServerLauncher::Start("/bin/sh");
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  EXPECT_FALSE(NamespaceOfSpawned(**launcher, "/netns/clone").ok());
}

}  // namespace
}  // namespace ember::testing
