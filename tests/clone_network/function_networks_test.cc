// The Functions pool's clone networks through fn's seam (needs root): a lease per clone, its
// namespace holding the deploy VM's tap, gone with the lease.
#include "vmm/emberd/clone_network/function_networks.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "tests/clone_network/world.h"
#include "tests/support/files.h"

namespace ember::testing {
namespace {

absl::StatusOr<std::unique_ptr<emberd::CloneNetworkServer>> StartServer(const ScopedTempDir& dir) {
  emberd::CloneNetworkServerConfig config;
  config.netns_dir = dir.path() + "/netns";
  return emberd::CloneNetworkServer::Start(config);
}

TEST(FunctionNetworks, EachLeaseIsANetworkWithTheDeployVmsTapGoneWithTheLease) {
  if (std::string why = EnterTestHost(); !why.empty()) GTEST_SKIP() << why;
  ScopedTempDir dir("fnnet-fn");
  auto server = StartServer(dir);
  ASSERT_TRUE(server.ok()) << server.status();
  emberd::FunctionNetworks networks(**server, *emberd::Ipv4Cidr::Parse("172.16.0.1/30"), false);
  v1::VmConfig deployed;
  deployed.add_network_interfaces()->set_host_dev_name("fntap");
  absl::StatusOr<std::unique_ptr<emberd::functions::CloneNetworkLease>> a =
      networks.Acquire("f", "fn-f-1-0", deployed);
  absl::StatusOr<std::unique_ptr<emberd::functions::CloneNetworkLease>> b =
      networks.Acquire("f", "fn-f-2-0", deployed);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const std::string path = (*a)->netns_path();
  EXPECT_NE(path, (*b)->netns_path());
  {
    base::UniqueFd netns(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(netns) << path;
    EXPECT_EQ(LinkNames(netns.Get()), (std::set<std::string>{"lo", "fntap"}));
  }
  v1::RestoreOverrides overrides;
  (*a)->ApplyTo(&overrides);
  EXPECT_EQ(overrides.ByteSizeLong(), 0u);  // the tap has the deploy VM's name
  a->reset();
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(FunctionNetworks, DeployVmWithoutOneInterfaceIsRefused) {
  if (std::string why = EnterTestHost(); !why.empty()) GTEST_SKIP() << why;
  ScopedTempDir dir("fnnet-fn");
  auto server = StartServer(dir);
  ASSERT_TRUE(server.ok()) << server.status();
  emberd::FunctionNetworks networks(**server, std::nullopt, false);
  EXPECT_EQ(networks.Acquire("f", "fn-f-1-0", v1::VmConfig()).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace ember::testing
