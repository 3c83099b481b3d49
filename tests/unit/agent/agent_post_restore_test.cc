// ember-agent's PostRestore, run as root in namespaces of its own (net + uts), so that the
// addresses, routes and hostname it sets are seen there and nowhere else. The host's wall
// clock is shared with every other process here: the agent sets it only where it cannot
// (CAP_SYS_TIME dropped), which proves the call is made; elsewhere --no-set-clock.
#include <time.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

#include "tests/unit/agent/agent_harness.h"

namespace ember::testing {
namespace {

// Runs the agent in new net and uts namespaces holding "eth0", one end of a veth pair (this
// host's kernel has no dummy links) whose other end is up.
AgentUnderTest::Setup InOwnNamespaces() {
  AgentUnderTest::Setup setup;
  setup.wrapper = {"/usr/bin/unshare", "--net", "--uts", "/bin/sh", "-c",
                   "ip link add eth0 type veth peer name peer0 && ip link set peer0 up && "
                   "exec \"$0\" \"$@\""};
  return setup;
}

class AgentPostRestore : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, RNDADDENTROPY)";
  }
};

std::uint64_t Fnv1a(const std::string& bytes) {
  std::uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : bytes) hash = (hash ^ c) * 1099511628211ull;
  return hash;
}

std::string RunIn(AgentUnderTest& agent, const std::string& script) {
  Collected output;
  absl::StatusOr<agent_client::ExecResult> result =
      agent.Client().Exec(ExecOf({"sh", "-c", script}), output.Callback());
  EXPECT_TRUE(result.ok()) << result.status();
  return output.out + output.err;
}

v1::NetworkSettings Eth0(const std::string& cidr, const std::string& gateway,
                         const std::string& mac = "") {
  v1::NetworkSettings settings;
  settings.set_interface("eth0");
  settings.set_address_cidr(cidr);
  settings.set_gateway(gateway);
  settings.set_mac(mac);
  return settings;
}

TEST_F(AgentPostRestore, SetsAddressRouteMacAndHostnameReplacingTheParents) {
  AgentUnderTest agent(InOwnNamespaces());
  ASSERT_TRUE(agent.ready_event().ok()) << agent.ready_event().status();
  v1::PostRestoreRequest parent;
  *parent.add_networks() = Eth0("172.16.0.2/30", "172.16.0.1", "02:00:00:00:00:07");
  parent.set_hostname("parent");
  ASSERT_TRUE(agent.Client().PostRestore(parent).ok());
  v1::PostRestoreRequest clone;
  *clone.add_networks() = Eth0("172.16.0.6/30", "172.16.0.5", "02:00:00:00:00:08");
  clone.set_hostname("clone-8");

  absl::StatusOr<v1::PostRestoreResult> result = agent.Client().PostRestore(clone);

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(RunIn(agent, "hostname"), "clone-8\n");
  // Through netlink: /sys/class/net is the host's until sysfs is mounted anew.
  std::string link = RunIn(agent, "ip -o link show eth0");
  EXPECT_NE(link.find("link/ether 02:00:00:00:00:08 "), std::string::npos) << link;
  EXPECT_NE(link.find(",UP"), std::string::npos) << link;
  std::string addresses = RunIn(agent, "ip -4 -o addr show dev eth0");
  EXPECT_NE(addresses.find("inet 172.16.0.6/30"), std::string::npos) << addresses;
  EXPECT_EQ(addresses.find("172.16.0.2"), std::string::npos) << "the parent's address stayed";
  std::string routes = RunIn(agent, "ip route show default");
  EXPECT_EQ(routes.rfind("default via 172.16.0.5 dev eth0 ", 0), 0u) << routes;
  EXPECT_EQ(routes.find('\n'), routes.size() - 1) << "one default route: " << routes;
}

TEST_F(AgentPostRestore, AddsEntropyReportsItsHashAndAFreshBootId) {
  AgentUnderTest agent;
  ASSERT_TRUE(agent.ready_event().ok()) << agent.ready_event().status();
  const std::uint64_t parent_boot_id = agent.ready_event()->boot_id();
  v1::PostRestoreRequest request;
  request.set_entropy(std::string("\x01\x02seed bytes\xff", 13));

  absl::StatusOr<v1::PostRestoreResult> result = agent.Client().PostRestore(request);

  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->entropy_bytes(), 13u);
  EXPECT_EQ(result->entropy_fnv1a(), Fnv1a(request.entropy()));
  EXPECT_NE(result->boot_id(), parent_boot_id);
  absl::StatusOr<v1::ReadyInfo> ready = agent.Client().Ready();
  ASSERT_TRUE(ready.ok());
  EXPECT_EQ(ready->boot_id(), result->boot_id());
}

TEST_F(AgentPostRestore, WithoutCapSysAdminTheEntropyStepFailsByName) {
  AgentUnderTest::Setup setup;
  setup.wrapper = {"/usr/bin/setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin"};
  AgentUnderTest agent(setup);
  v1::PostRestoreRequest request;
  request.set_entropy("seed");

  absl::StatusOr<v1::PostRestoreResult> result = agent.Client().PostRestore(request);

  EXPECT_EQ(result.status().code(), absl::StatusCode::kPermissionDenied) << result.status();
  EXPECT_NE(result.status().message().find("RNDADDENTROPY"), std::string_view::npos);
}

TEST_F(AgentPostRestore, SetsTheWallClockWithClockSettime) {
  // Without CAP_SYS_TIME the call is refused: that it is refused by name proves the agent makes
  // it, without moving this shared host's clock.
  AgentUnderTest::Setup setup;
  setup.wrapper = {"/usr/bin/setpriv", "--bounding-set", "-sys_time", "--inh-caps", "-sys_time"};
  setup.set_clock = true;
  AgentUnderTest agent(setup);
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  v1::PostRestoreRequest request;
  request.set_wall_clock_ns(static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000u);

  absl::StatusOr<v1::PostRestoreResult> result = agent.Client().PostRestore(request);

  EXPECT_EQ(result.status().code(), absl::StatusCode::kPermissionDenied) << result.status();
  EXPECT_NE(result.status().message().find("clock_settime"), std::string_view::npos);
}

TEST_F(AgentPostRestore, AMissingInterfaceIsNotFoundAndTheOtherStepsStillHappen) {
  AgentUnderTest agent(InOwnNamespaces());
  v1::PostRestoreRequest request;
  v1::NetworkSettings missing = Eth0("172.16.0.2/30", "");
  missing.set_interface("eth9");
  *request.add_networks() = missing;
  request.set_hostname("still-set");

  absl::StatusOr<v1::PostRestoreResult> result = agent.Client().PostRestore(request);

  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound) << result.status();
  EXPECT_NE(result.status().message().find("eth9"), std::string_view::npos);
  EXPECT_EQ(RunIn(agent, "hostname"), "still-set\n");
}

TEST_F(AgentPostRestore, BadSettingsAreInvalidArgument) {
  AgentUnderTest agent(InOwnNamespaces());
  for (const v1::NetworkSettings& bad :
       {Eth0("172.16.0.2/33", ""), Eth0("not-an-address", ""), Eth0("172.16.0.2/30", "gw"),
        Eth0("172.16.0.2/30", "", "02:00:00:00:00")}) {
    v1::PostRestoreRequest request;
    *request.add_networks() = bad;

    absl::StatusOr<v1::PostRestoreResult> result = agent.Client().PostRestore(request);

    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
        << bad.DebugString() << result.status();
  }
  v1::PostRestoreRequest too_much;
  too_much.set_entropy(std::string(64 * 1024 + 1, 'e'));
  EXPECT_EQ(agent.Client().PostRestore(too_much).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(agent.Client().Ready().ok());
}

}  // namespace
}  // namespace ember::testing
