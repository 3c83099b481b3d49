#include "jailer/cgroup.h"

#include <gtest/gtest.h>

namespace ember::jailer {
namespace {

// Lines as this development machine's kernel writes them: v1 controllers next to a v2 mount.
constexpr char kHybrid[] =
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup "
    "rw,cpu,cpuacct\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    "garbage line\n";

TEST(MountInfo, ParsesFieldsAfterOptionalTags) {
  std::vector<MountInfoEntry> mounts = ParseMountInfo(kHybrid);
  ASSERT_EQ(mounts.size(), 6u);
  EXPECT_EQ(mounts[1].mount_point, "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_EQ(mounts[1].fs_type, "cgroup");
  EXPECT_EQ(mounts[1].super_options, (std::vector<std::string>{"rw", "cpu", "cpuacct"}));
}

TEST(MountInfo, UnescapesOctalInMountPoint) {
  auto mounts = ParseMountInfo("1 2 0:1 / /mnt/a\\040b rw - cgroup2 none rw\n");
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_EQ(mounts[0].mount_point, "/mnt/a b");
}

TEST(MountInfo, FindsCgroup2Mount) {
  auto mount = FindCgroup2Mount(ParseMountInfo(kHybrid));
  ASSERT_TRUE(mount.ok()) << mount.status();
  EXPECT_EQ(*mount, "/sys/fs/cgroup/unified");
}

TEST(MountInfo, FindsV1MountSharedByTwoControllers) {
  auto mounts = ParseMountInfo(kHybrid);
  EXPECT_EQ(FindCgroup1Mount(mounts, "cpuacct").value_or(""), "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_EQ(FindCgroup1Mount(mounts, "pids").value_or(""), "/sys/fs/cgroup/pids");
}

TEST(MountInfo, MissingV1ControllerIsNotFound) {
  auto mount = FindCgroup1Mount(ParseMountInfo(kHybrid), "hugetlb");
  EXPECT_EQ(mount.status().code(), absl::StatusCode::kNotFound);
}

TEST(MountInfo, NoCgroup2IsNotFound) {
  auto mount = FindCgroup2Mount(
      ParseMountInfo("35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"));
  EXPECT_EQ(mount.status().code(), absl::StatusCode::kNotFound);
}

TEST(CgroupPlacement, AHybridHostWhoseV2LacksTheControllersUsesV1) {
  CgroupPlacement placement =
      PlaceControllers(ParseMountInfo(kHybrid), "hugetlb\n", {"memory", "pids", "cpu"});
  EXPECT_EQ(placement.version, 1);
  EXPECT_EQ(placement.controllers, (std::vector<std::string>{"memory", "pids", "cpu"}));
  EXPECT_EQ(placement.mounts, (std::vector<std::string>{"/sys/fs/cgroup/memory",
                                                        "/sys/fs/cgroup/pids",
                                                        "/sys/fs/cgroup/cpu,cpuacct"}));
  EXPECT_TRUE(placement.missing.empty());
}

TEST(CgroupPlacement, V2CarryingEveryControllerIsUsedAlone) {
  CgroupPlacement placement = PlaceControllers(ParseMountInfo(kHybrid), "cpu memory pids\n",
                                               {"memory", "pids", "cpu"});
  EXPECT_EQ(placement.version, 2);
  EXPECT_EQ(placement.mounts, (std::vector<std::string>{"/sys/fs/cgroup/unified"}));
}

TEST(CgroupPlacement, AControllerNoHierarchyCarriesIsMissing) {
  CgroupPlacement placement =
      PlaceControllers(ParseMountInfo(kHybrid), "", {"memory", "hugetlb"});
  EXPECT_EQ(placement.version, 1);
  EXPECT_EQ(placement.controllers, (std::vector<std::string>{"memory"}));
  EXPECT_EQ(placement.missing, (std::vector<std::string>{"hugetlb"}));
  EXPECT_EQ(PlaceControllers({}, "", {"memory"}).version, 0);
}

TEST(Cgroup, ControllerIsThePrefixBeforeTheFirstDot) {
  EXPECT_EQ(ControllerOf("memory.limit_in_bytes"), "memory");
  EXPECT_EQ(ControllerOf("cpuset.cpus.exclusive"), "cpuset");
}

}  // namespace
}  // namespace ember::jailer
