// PlanExec: what the guest's agent is asked to run for a bundle's (or exec's) process.
#include "vmm/runtime/vm_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <string>

namespace ember::runtime {
namespace {

using ::testing::ElementsAre;

TEST(PlanExec, LimitsGroupsAndCapabilitiesGoToTheAgent) {
  BundleProcess process;
  process.args = {"server"};
  process.cwd = "/srv";
  process.uid = 1000;
  process.gid = 1000;
  process.additional_gids = {10, 20};
  process.rlimits = {{"RLIMIT_NOFILE", RLIMIT_NOFILE, 512, 1024},
                     {"RLIMIT_CORE", RLIMIT_CORE, 0, ~uint64_t{0}}};
  process.no_new_privileges = true;
  process.capabilities =
      BundleCapabilities{{"CAP_CHOWN", "CAP_NET_BIND_SERVICE"}, {"CAP_NET_BIND_SERVICE"}, {},
                         {"CAP_NET_BIND_SERVICE"}, {}};

  v1::ExecRequest exec = PlanExec(process);

  EXPECT_THAT(exec.additional_gids(), ElementsAre(10u, 20u));
  EXPECT_THAT(exec.rlimits(), ElementsAre(std::to_string(RLIMIT_NOFILE) + " 512 1024",
                                          std::to_string(RLIMIT_CORE) + " 0 18446744073709551615"));
  EXPECT_TRUE(exec.no_new_privileges());
  EXPECT_TRUE(exec.set_capabilities());
  EXPECT_THAT(exec.cap_bounding(), ElementsAre("CAP_CHOWN", "CAP_NET_BIND_SERVICE"));
  EXPECT_THAT(exec.cap_effective(), ElementsAre("CAP_NET_BIND_SERVICE"));
  EXPECT_THAT(exec.cap_permitted(), ElementsAre("CAP_NET_BIND_SERVICE"));
  EXPECT_TRUE(exec.cap_inheritable().empty());
  EXPECT_TRUE(exec.cap_ambient().empty());
}

TEST(PlanExec, WithoutCapabilitiesTheAgentIsNotAskedToSetAny) {
  BundleProcess process;
  process.args = {"sh"};
  process.cwd = "/";

  v1::ExecRequest exec = PlanExec(process);

  EXPECT_FALSE(exec.set_capabilities());
  EXPECT_FALSE(exec.no_new_privileges());
  EXPECT_TRUE(exec.rlimits().empty());
  EXPECT_TRUE(exec.additional_gids().empty());
}

}  // namespace
}  // namespace ember::runtime
