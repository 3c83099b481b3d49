// Every attack of rootfs/testguest/attack.h on ember-vmm's virtio-net device on real KVM and a
// real tap, in a network namespace of the test's own (needs root): the VMM survives, the
// device sets NEEDS_RESET or drops the frame as the virtio spec says, the metrics count it,
// and the device serves again after each reset.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/integration/hostile_attacks.h"
#include "tests/integration/hostile_vmm.h"
#include "tests/support/files.h"
#include "tests/support/kvm_available.h"
#include "tests/support/netns.h"
#include "tests/support/process.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

constexpr char kTap[] = "emberhtap0";

TEST(HostileNet, NetDeviceResetsOrDropsOnEveryAttackAndServesAfterEachReset) {
  const std::string not_root = EnterPrivateNetns();
  if (!not_root.empty()) GTEST_SKIP() << not_root;
  EMBER_REQUIRE_KVM();
  ASSERT_EQ(Ip({"tuntap", "add", "dev", kTap, "mode", "tap"}).exit_code, 0);
  ASSERT_EQ(Ip({"link", "set", kTap, "up"}).exit_code, 0);
  ScopedTempDir dir("ember-hostile-net");
  ControlledVmm vmm(
      dir.path(), GuestConfig("net-attacks,idle",
                              R"("network-interfaces": [{"iface_id": "eth0", "host_dev_name": ")" +
                                  std::string(kTap) + R"("}])"));
  ASSERT_TRUE(vmm.ok()) << vmm.error();

  ASSERT_TRUE(vmm.WaitForConsole("\nidle\n", seconds(240))) << vmm.Console();

  ExpectAttacksHandled(vmm, {"net", "net_eth0", "tx_malformed_frames"});
}

}  // namespace
}  // namespace ember::testing
