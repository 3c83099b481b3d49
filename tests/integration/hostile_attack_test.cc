// Every attack of rootfs/testguest/attack.h on ember-vmm's virtio-blk and virtio-vsock devices
// on real KVM (virtio-net's, which needs a tap, is hostile_net_test.cc): the VMM survives,
// each device sets NEEDS_RESET or drops the request as the virtio spec says, the metrics count
// it, the device serves again after a reset, and a well-behaved VM beside the hostile one
// keeps working.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "rootfs/testguest/blk_pattern.h"
#include "tests/integration/hostile_attacks.h"
#include "tests/integration/hostile_vmm.h"
#include "tests/support/files.h"
#include "tests/support/kvm_available.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

// Thirteen attacks, each followed by a reset and a request: about a minute of guest time here.
constexpr seconds kAttacksTimeout(240);

const AttackedDevice kBlk = {"blk", "block_" BLK_DRIVE_ID, "invalid_requests"};
const AttackedDevice kVsock = {"vsock", "vsock_vsock0", "malformed_packets"};

TEST(HostileAttack, BlkDeviceResetsOrDropsOnEveryAttackAndServesAfterEachReset) {
  EMBER_REQUIRE_KVM();
  ScopedTempDir dir("ember-hostile-attack");
  ControlledVmm vmm(dir.path(), GuestConfig("blk-attacks,idle",
                                            DriveMember(dir.path(), std::string(64 * 1024, 'a'))));
  ASSERT_TRUE(vmm.ok()) << vmm.error();

  ASSERT_TRUE(vmm.WaitForConsole("\nidle\n", kAttacksTimeout)) << vmm.Console();

  ExpectAttacksHandled(vmm, kBlk);
}

TEST(HostileAttack, VsockDeviceResetsOrDropsOnEveryAttackAndServesAfterEachReset) {
  EMBER_REQUIRE_KVM();
  ScopedTempDir dir("ember-hostile-attack");
  ControlledVmm vmm(dir.path(),
                    GuestConfig("vsock-attacks,idle", VsockMember(dir.path() + "/v.sock")));
  ASSERT_TRUE(vmm.ok()) << vmm.error();

  ASSERT_TRUE(vmm.WaitForConsole("\nidle\n", kAttacksTimeout)) << vmm.Console();

  ExpectAttacksHandled(vmm, kVsock);
}

// How many attacks the guest has reported so far.
std::size_t AttackLines(const std::string& console) {
  std::size_t n = 0;
  for (std::size_t at = console.find("\nattack "); at != std::string::npos;
       at = console.find("\nattack ", at + 1)) {
    ++n;
  }
  return n;
}

TEST(HostileAttack, WellBehavedVmBesideAnAttackingOneKeepsWorking) {
  EMBER_REQUIRE_KVM();
  ScopedTempDir hostile_dir("ember-hostile-attack"), quiet_dir("ember-hostile-attack");
  ControlledVmm hostile(hostile_dir.path(),
                        GuestConfig("blk-attacks,vsock-attacks,idle",
                                    DriveMember(hostile_dir.path(), std::string(64 * 1024, 'a')) +
                                        ", " + VsockMember(hostile_dir.path() + "/v.sock")));
  ASSERT_TRUE(hostile.ok()) << hostile.error();
  ASSERT_TRUE(hostile.WaitForConsole("attack blk desc-loop: ", seconds(60))) << hostile.Console();

  // Started while the other guest attacks: its own disk work runs start to finish.
  const std::size_t attacks_before = AttackLines(hostile.Console());
  ControlledVmm quiet(
      quiet_dir.path(),
      GuestConfig("blk-reset,blk,idle", DriveMember(quiet_dir.path(), BlkPatternImage())));
  ASSERT_TRUE(quiet.ok()) << quiet.error();
  ASSERT_TRUE(quiet.WaitForConsole("\nidle\n", kAttacksTimeout)) << quiet.Console();
  const std::size_t attacks_after = AttackLines(hostile.Console());

  EXPECT_NE(quiet.Console().find("\nPASS blk\n"), std::string::npos) << quiet.Console();
  EXPECT_NE(quiet.Console().find("\nPASS blk-reset\n"), std::string::npos) << quiet.Console();
  EXPECT_GT(attacks_after, attacks_before)
      << "no attack ran while the quiet guest worked, so the two did not overlap\n"
      << hostile.Console();
  ASSERT_TRUE(hostile.WaitForConsole("\nidle\n", kAttacksTimeout)) << hostile.Console();
  ExpectAttacksHandled(hostile, kBlk);
  ExpectAttacksHandled(hostile, kVsock);
}

}  // namespace
}  // namespace ember::testing
