// The deploy VM's configuration a DeployFunctionRequest turns into (function_rules.h).
#include "vmm/emberd/functions/function_rules.h"

#include <gtest/gtest.h>

namespace ember::emberd::functions {
namespace {

v1::DeployFunctionRequest Request(bool network, const std::string& kernel) {
  v1::DeployFunctionRequest request;
  request.set_name("f");
  request.set_kernel_image_path(kernel);
  request.set_mem_size_mib(64);
  request.set_network(network);
  return request;
}

TEST(DeployConfig, NetworkOnGivesOneInterfaceOnTheFunctionTap) {
  const v1::VmConfig config = DeployConfig(Request(true, ""), "/img", "/out/agent.sock");
  ASSERT_EQ(config.network_interfaces_size(), 1);
  EXPECT_EQ(config.network_interfaces(0).iface_id(), "eth0");
  EXPECT_EQ(config.network_interfaces(0).host_dev_name(), kFunctionTap);
  EXPECT_EQ(config.network_interfaces(0).guest_mac(), kFunctionGuestMac);
  EXPECT_EQ(config.vsock().uds_path(), "/out/agent.sock");
}

TEST(DeployConfig, NetworkOffGivesNoInterface) {
  EXPECT_EQ(DeployConfig(Request(false, ""), "/img", "/s").network_interfaces_size(), 0);
}

TEST(DeployConfig, LinuxGuestWithNetworkGetsTheClonesAddressOnItsCommandLine) {
  const std::string args =
      DeployConfig(Request(true, "/vmlinux"), "/img", "/s").boot_source().boot_args();
  EXPECT_NE(args.find("init=/sbin/ember-init"), std::string::npos) << args;
  EXPECT_NE(args.find(" ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off"),
            std::string::npos)
      << args;
  EXPECT_EQ(DeployConfig(Request(false, "/vmlinux"), "/img", "/s")
                .boot_source()
                .boot_args()
                .find("ip="),
            std::string::npos);
}

TEST(DeployConfig, TheRequestsBootArgsAreKeptAsTheyAre) {
  v1::DeployFunctionRequest request = Request(true, "/vmlinux");
  request.set_boot_args("console=ttyS0 mine");
  EXPECT_EQ(DeployConfig(request, "/img", "/s").boot_source().boot_args(), "console=ttyS0 mine");
}

}  // namespace
}  // namespace ember::emberd::functions
