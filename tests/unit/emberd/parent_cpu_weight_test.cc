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
  JailCgroups Hierarchies(int version, const std::string& file, bool parent_exists = true) {
    JailCgroups cgroups;
    cgroups.version = version;
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
  ParentCpuWeight weight(Hierarchies(2, "cpu.weight"));
  for (int i = 0; i < 150; ++i) {
    weight.Add("vm" + std::to_string(i), {"--cgroup", "cpu.weight=100"});
  }
  EXPECT_EQ("10000", Read("cpu.weight"));
  EXPECT_EQ(100u, ParentCpuWeight::Clamp(2, 0));
  EXPECT_EQ(262144u, ParentCpuWeight::Clamp(1, 1u << 30));
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
