// The real ember-vmm run through the real ember-jailer (chroot, uid/gid, new pid namespace,
// cgroup limits, seccomp filters on) booting the built-in test guest: what emberd will do for
// every microVM. Needs root and /dev/kvm.
#include <ftw.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "jailer/cgroup.h"
#include "tests/support/kvm_available.h"
#include "tests/support/process.h"
#include "tests/unit/jailer/jailer_process.h"

namespace ember::testing {
namespace {

using jailer::OwnV1Cgroup;
using jailer::ReadFileOr;
using jailer::RemoveEntry;
using std::chrono::seconds;

constexpr uid_t kUid = 12345;
constexpr gid_t kGid = 12346;

class JailedVmm : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "ember-jailer needs root";
    EMBER_REQUIRE_KVM();
    char dir[] = "/tmp/ember-jailed-vmm-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    base_ = dir;
    id_ = "vm" + std::to_string(getpid()) + "-" +
          ::testing::UnitTest::GetInstance()->current_test_info()->name();
    for (char& c : id_) {
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '-';
    }
    id_ = id_.substr(0, 60);
  }

  void TearDown() override {
    for (auto it = cgroup_dirs_.rbegin(); it != cgroup_dirs_.rend(); ++it) rmdir(it->c_str());
    if (!base_.empty()) nftw(base_.c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS);
  }

  std::string ChrootDir() const { return base_ + "/ember-vmm/" + id_ + "/root"; }

  // ember-jailer's command line for ember-vmm with `vmm_args`, in a new pid namespace and,
  // where this host has a v1 pids hierarchy, a pids-limited cgroup.
  std::vector<std::string> Command(const std::vector<std::string>& vmm_args) {
    std::vector<std::string> argv = {BinPath("ember-jailer"),
                                     "--id",
                                     id_,
                                     "--exec-file",
                                     BinPath("ember-vmm"),
                                     "--uid",
                                     std::to_string(kUid),
                                     "--gid",
                                     std::to_string(kGid),
                                     "--chroot-base-dir",
                                     base_,
                                     "--new-pid-ns"};
    auto pids = jailer::FindCgroup1Mount(jailer::ParseMountInfo(ReadFileOr("/proc/self/mountinfo")),
                                         "pids");
    if (pids.ok()) {
      std::string parent = OwnV1Cgroup("pids");
      while (!parent.empty() && parent[0] == '/') parent.erase(0, 1);
      parent += (parent.empty() ? "" : "/") + std::string("ember-jailed-vmm-test-") +
                std::to_string(getpid());
      cgroup_dirs_.push_back(*pids + "/" + parent);
      cgroup_dirs_.push_back(*pids + "/" + parent + "/" + id_);
      cgroup_leaf_ = cgroup_dirs_.back();
      argv.insert(argv.end(),
                  {"--cgroup-version", "1", "--cgroup", "pids.max=64", "--parent-cgroup", parent});
    }
    argv.push_back("--");
    argv.insert(argv.end(), vmm_args.begin(), vmm_args.end());
    return argv;
  }

  std::string base_;
  std::string id_;
  std::vector<std::string> cgroup_dirs_;
  std::string cgroup_leaf_;
};

TEST_F(JailedVmm, BuiltInGuestPassesHelloAndTheVmmExitsCleanly) {
  // Paths are inside the chroot: the VMM sees nothing else.
  ProcessResult result =
      RunProcess(Command({"--metrics-path", "/out/metrics.json", "--log-level", "Debug"}),
                 seconds(60));

  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("\nPASS hello\n"), std::string::npos) << result.out << result.err;
  // Filters were on inside the jail, for both thread kinds.
  EXPECT_NE(result.err.find("seccomp filter \"vcpu\""), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("seccomp filter \"vmm\""), std::string::npos) << result.err;
  // The metrics file was written inside the chroot, in the one directory the jailed uid/gid
  // may write.
  std::string metrics_path = ChrootDir() + "/out/metrics.json";
  EXPECT_NE(ReadFileOr(metrics_path).find("start_to_first_instruction_us"), std::string::npos);
  struct stat st {};
  ASSERT_EQ(stat(metrics_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kUid);
  EXPECT_EQ(st.st_gid, kGid);
}

// ember-vmm runs ember-config for --config and ember-fc-api for --api-sock from beside itself.
TEST_F(JailedVmm, CompanionBinariesAreLinkedInBesideTheVmm) {
  ProcessResult result = RunProcess(Command({}), seconds(60));

  EXPECT_EQ(result.exit_code, 0) << result.err;
  for (const char* name : {"ember-config", "ember-fc-api"}) {
    struct stat st {};
    EXPECT_EQ(stat((ChrootDir() + "/" + name).c_str(), &st), 0) << name << " is not in the jail";
    EXPECT_TRUE(S_ISREG(st.st_mode)) << name;
  }
}

TEST_F(JailedVmm, SigtermReachesTheVmmAsPidOneAndStopsItCleanly) {
  // A config in the chroot, put there before the jailer (which keeps an existing directory)
  // runs: the idle scenario leaves the guest halted until the VMM is told to stop.
  ASSERT_EQ(system(("mkdir -p '" + ChrootDir() + "'").c_str()), 0);
  std::ofstream(ChrootDir() + "/vm.json")
      << R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=idle"}})";
  // ember-vmm reads it through ember-config, which the jailer linked in beside ember-vmm.
  Process jailed(Command({"--config", "/vm.json"}));
  ASSERT_TRUE(jailed.WaitForOutput("idle\n", seconds(30)));

  // The jailer's foreground parent forwards SIGTERM to the VMM, which is pid 1 of its pid
  // namespace: the kernel delivers it only because the VMM installed a handler.
  jailed.Signal(SIGTERM);
  ProcessResult result = jailed.Wait(seconds(30));

  EXPECT_FALSE(result.timed_out) << result.err;
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("stopped by"), std::string::npos) << result.err;
}

}  // namespace
}  // namespace ember::testing
