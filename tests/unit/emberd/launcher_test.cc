// The fork server hands a VMM the files emberd checked (launch_files.h), not their names: a
// name swapped for a symlink out between emberd's check and the VMM's open changes nothing.
#include "vmm/emberd/launcher.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/support/files.h"
#include "vmm/emberd/launch_files.h"

namespace ember::emberd {
namespace {

using ::ember::testing::ReadFile;

class LauncherFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(allowed_);
    std::filesystem::create_directories(temp_.path() + "/outside");
    std::ofstream(disk_) << "checked";
    std::ofstream(secret_) << "secret";
    ASSERT_EQ(::chmod(secret_.c_str(), 0600), 0);
    auto rules = base::PathRules::Open({allowed_});
    ASSERT_TRUE(rules.ok()) << rules.status();
    rules_ = std::move(*rules);
    null_.Reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
    spec_.vm_id = "vm1";
    spec_.vm_dir = temp_.path();
    spec_.control_listen_fd = null_.Get();
    spec_.stderr_fd = null_.Get();
  }

  // A shell script standing in for a program the fork server spawns.
  std::string Script(const std::string& name, const std::string& body) {
    const std::string path = temp_.path() + "/" + name;
    std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
    EXPECT_EQ(::chmod(path.c_str(), 0755), 0);
    return path;
  }

  // After the check, the drive's name leads to the root-only file outside. The checked file
  // lives on under another name (a file with no name left cannot be linked into a jail: the
  // launch would fail, safely).
  void SwapTheNameForASymlinkOut() {
    ASSERT_EQ(::link(disk_.c_str(), (allowed_ + "/kept").c_str()), 0);
    const std::string swap = allowed_ + "/swap";
    ASSERT_EQ(::symlink(secret_.c_str(), swap.c_str()), 0);
    ASSERT_EQ(::rename(swap.c_str(), disk_.c_str()), 0);
    ASSERT_EQ(ReadFile(disk_), "secret");
  }

  static void Reap(pid_t pid) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }

  ::ember::testing::ScopedTempDir temp_{"ember-launcher-test"};
  const std::string allowed_ = temp_.path() + "/allowed";
  const std::string disk_ = allowed_ + "/disk.img";
  const std::string secret_ = temp_.path() + "/outside/secret";
  base::PathRules rules_;
  base::UniqueFd null_;
  LaunchSpec spec_;
};

TEST_F(LauncherFilesTest, AnUnjailedVmmReadsTheFileEmberdCheckedNotWhereItsNameLeadsLater) {
  // The VMM stand-in reads its drive as ember-vmm would: through the path its config names.
  auto launcher = ForkServerLauncher::Start(
      Script("vmm", "cat " + InheritedFilePath(0) + " > \"$1\""));
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  auto index = AddCheckedFile(rules_, "config.drives[0].path_on_host", disk_, &spec_);
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(*index, 0);
  SwapTheNameForASymlinkOut();
  const std::string out = temp_.path() + "/read";
  spec_.vmm_args = {out};
  auto pid = (*launcher)->Launch(spec_);
  ASSERT_TRUE(pid.ok()) << pid.status();
  Reap(*pid);
  EXPECT_EQ(ReadFile(out), "checked");
}

TEST_F(LauncherFilesTest, AJailedVmmFindsTheFileEmberdCheckedLinkedIntoItsJail) {
  JailerConfig jail;
  jail.jailer = Script("jailer", "exit 0");  // the jail's files are placed before it runs
  jail.chroot_base = temp_.path() + "/jails";
  jail.ids = JailIds{840000, 3};
  spec_.jailer_args = {"--uid", "840001", "--gid", "840001"};
  const std::string vmm = Script("vmm", "exit 0");
  auto launcher = ForkServerLauncher::Start(vmm, jail);
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  struct stat checked {};
  ASSERT_EQ(::stat(disk_.c_str(), &checked), 0);
  auto index = AddCheckedFile(rules_, "config.drives[0].path_on_host", disk_, &spec_);
  ASSERT_TRUE(index.ok()) << index.status();
  spec_.jail_files.push_back(JailFile{JailFile::How::kLink, disk_, "drive0", *index});
  SwapTheNameForASymlinkOut();
  auto pid = (*launcher)->Launch(spec_);
  ASSERT_TRUE(pid.ok()) << pid.status();
  Reap(*pid);
  const std::string linked = jail.JailRoot(vmm, "vm1") + "/drive0";
  struct stat seen {};
  ASSERT_EQ(::lstat(linked.c_str(), &seen), 0);
  EXPECT_EQ(seen.st_ino, checked.st_ino);
  EXPECT_EQ(ReadFile(linked), "checked");
}

TEST_F(LauncherFilesTest, AFifoToCopyIntoAJailFailsTheLaunchInsteadOfBlockingTheForkServer) {
  JailerConfig jail;
  jail.jailer = Script("jailer", "exit 0");
  jail.chroot_base = temp_.path() + "/jails";
  jail.ids = JailIds{840000, 3};
  spec_.jailer_args = {"--uid", "840001", "--gid", "840001"};
  auto launcher = ForkServerLauncher::Start(Script("vmm", "exit 0"), jail);
  ASSERT_TRUE(launcher.ok()) << launcher.status();
  // A FIFO where a working set was (opened by a racing client's swap): reading it by its
  // name blocks until a writer comes.
  const std::string fifo = allowed_ + "/memory.ws";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  spec_.files.emplace_back(::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  ASSERT_TRUE(spec_.files.back());
  spec_.jail_files.push_back(JailFile{JailFile::How::kCopy, fifo, "snap.mem.ws", 0});
  // A blocked fork server is let go by a writer now and then, so that the test ends either way.
  std::atomic<bool> done = false;
  std::thread writer([&] {
    while (!done) {
      std::this_thread::sleep_for(std::chrono::seconds(2));
      base::UniqueFd unblock(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    }
  });
  auto pid = (*launcher)->Launch(spec_);
  done = true;
  writer.join();
  EXPECT_FALSE(pid.ok()) << "a FIFO was copied into the jail";
  if (pid.ok()) Reap(*pid);
}

TEST_F(LauncherFilesTest, AFileOutsideTheAllowedDirectoriesIsNeverHandedOver) {
  absl::Status refused =
      AddCheckedFile(rules_, "config.boot-source.kernel_image_path", secret_, &spec_).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("config.boot-source.kernel_image_path: " + secret_ +
                                   " is outside the allowed directories"),
            std::string::npos)
      << refused;
  EXPECT_TRUE(spec_.files.empty());
}

}  // namespace
}  // namespace ember::emberd
