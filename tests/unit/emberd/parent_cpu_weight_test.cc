#include "vmm/emberd/parent_cpu_weight.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <string>

#include "tests/support/files.h"

namespace ember::emberd {
namespace {

// A cgroup hierarchy stand-in: <dir>/cpu/ember-test/<file> and <dir>/memory/ember-test (no cpu
// file there, as on a v1 host whose memory hierarchy is mounted apart).
class ParentCpuWeightTest : public ::testing::Test {
 protected:
  JailCgroups Hierarchies(int version, const std::string& file, bool parent_exists = true,
                          unsigned host_cpus = 4) {
    JailCgroups cgroups;
    cgroups.version = version;
    cgroups.host_cpus = host_cpus;
    cgroups.parent = "ember-test";
    for (const char* mount : {"cpu", "memory"}) {
      const std::string dir = dir_.path() + "/" + mount;
      ::mkdir(dir.c_str(), 0755);
      if (parent_exists) ::mkdir((dir + "/ember-test").c_str(), 0755);
      cgroups.mounts.push_back(dir);
    }
    if (parent_exists) std::ofstream(Parent() + file) << (version == 2 ? "100\n" : "1024\n");
    return cgroups;
  }
  std::string Parent() const { return dir_.path() + "/cpu/ember-test/"; }
  std::string Read(const std::string& file) const { return testing::ReadFile(Parent() + file); }

  testing::ScopedTempDir dir_{"parent-cpu-weight"};
};

TEST_F(ParentCpuWeightTest, TheParentWeighsAsMuchAsItsVmsTogether) {
  ParentCpuWeight weight(Hierarchies(1, "cpu.shares"));
  weight.Add("a", {"--cgroup", "memory.limit_in_bytes=1", "--cgroup", "cpu.shares=1024"});
  weight.Add("b", {"--uid", "7", "--cgroup", "cpu.shares=2048"});
  EXPECT_EQ("3072", Read("cpu.shares"));
  weight.Remove("a");
  EXPECT_EQ("2048", Read("cpu.shares"));
  weight.Remove("a");  // again: nothing changes
  EXPECT_EQ("2048", Read("cpu.shares"));
  weight.Remove("b");
  EXPECT_EQ("1024", Read("cpu.shares"));  // the default once no VM counts
}

TEST_F(ParentCpuWeightTest, AVmLaunchedAgainCountsOnce) {
  ParentCpuWeight weight(Hierarchies(1, "cpu.shares"));
  weight.Add("a", {"--cgroup", "cpu.shares=1024"});
  weight.Add("a", {"--cgroup", "cpu.shares=2048"});
  EXPECT_EQ("2048", Read("cpu.shares"));
}

TEST_F(ParentCpuWeightTest, V2WeightsStayInCpuWeightsRange) {
  ParentCpuWeight weight(Hierarchies(2, "cpu.weight", true, /*host_cpus=*/512));
  for (int i = 0; i < 150; ++i) {
    weight.Add("vm" + std::to_string(i), {"--cgroup", "cpu.weight=100"});
  }
  EXPECT_EQ("10000", Read("cpu.weight"));
  EXPECT_EQ(100u, ParentCpuWeight::Clamp(2, 512, 0));
  EXPECT_EQ(262144u, ParentCpuWeight::Clamp(1, 512, 1u << 30));
}

// 200 busy one-vCPU VMs on a 2-CPU host weigh what two busy default tasks would, not 100x
// system.slice (emberd, sshd) and user.slice.
TEST_F(ParentCpuWeightTest, ManyVmsWeighNoMoreThanADefaultPerHostCpu) {
  ParentCpuWeight v2(Hierarchies(2, "cpu.weight", true, /*host_cpus=*/2));
  for (int i = 0; i < 200; ++i) v2.Add("vm" + std::to_string(i), {"--cgroup", "cpu.weight=100"});
  EXPECT_EQ("200", Read("cpu.weight"));
  v2.Remove("vm0");
  EXPECT_EQ("200", Read("cpu.weight"));
}

TEST_F(ParentCpuWeightTest, ManyVmsWeighNoMoreThanADefaultPerHostCpuOnV1) {
  ParentCpuWeight v1(Hierarchies(1, "cpu.shares", true, /*host_cpus=*/2));
  for (int i = 0; i < 200; ++i) v1.Add("vm" + std::to_string(i), {"--cgroup", "cpu.shares=1024"});
  EXPECT_EQ("2048", Read("cpu.shares"));
}

TEST_F(ParentCpuWeightTest, FewVmsStillWeighTheirSumUnderTheCap) {
  ParentCpuWeight weight(Hierarchies(2, "cpu.weight", true, /*host_cpus=*/2));
  weight.Add("a", {"--cgroup", "cpu.weight=100"});
  EXPECT_EQ("100", Read("cpu.weight"));
  weight.Add("b", {"--cgroup", "cpu.weight=50"});
  EXPECT_EQ("150", Read("cpu.weight"));
}

TEST_F(ParentCpuWeightTest, NothingIsMadeWhereNoParentIsYet) {
  ParentCpuWeight weight(Hierarchies(1, "cpu.shares", /*parent_exists=*/false));
  weight.Add("a", {"--cgroup", "cpu.shares=2048"});
  struct stat st {};
  EXPECT_NE(0, ::stat((dir_.path() + "/cpu/ember-test").c_str(), &st));
  EXPECT_NE(0, ::stat((dir_.path() + "/memory/ember-test/cpu.shares").c_str(), &st));
}

TEST_F(ParentCpuWeightTest, AVmWithoutACpuLimitLeavesTheParentAlone) {
  ParentCpuWeight weight(Hierarchies(1, "cpu.shares"));
  weight.Add("a", {"--cgroup", "memory.limit_in_bytes=1"});
  EXPECT_EQ("1024\n", Read("cpu.shares"));
}

}  // namespace
}  // namespace ember::emberd
