// A guest that floods its virtio-blk queue with one read chain, republished while it is still
// in flight (the `blk-flood` scenario), against ember-vmm on real KVM and io_uring: the VMM
// thread, which also serves the control socket, must keep answering its controller during
// the flood, and the VMM must not keep the memory the flood made it take.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

#include "rootfs/testguest/blk_pattern.h"
#include "rootfs/testguest/hostile.h"
#include "tests/integration/hostile_vmm.h"
#include "tests/support/files.h"
#include "tests/support/kvm_available.h"

namespace ember::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// How much more than the control run the flooded VMM may hold once its guest idles: room for
// a queue's worth of requests and allocator slack, far below what an unbounded flood keeps.
constexpr std::uint64_t kRssMarginKib = 4 * 1024;

// Room for blk-flood's read.
std::string FloodImage() { return std::string(BLK_FLOOD_DISK_BYTES, '\x5a'); }

TEST(HostileBlk, ControllerIsAnsweredWithinASecondDuringAReadChainFlood) {
  EMBER_REQUIRE_KVM();
  ScopedTempDir dir("ember-hostile-blk");
  ControlledVmm vmm(dir.path(),
                    GuestConfig("blk-flood,idle", DriveMember(dir.path(), FloodImage())));
  ASSERT_TRUE(vmm.ok()) << vmm.error();
  ASSERT_TRUE(vmm.WaitForConsole(BLK_FLOOD_MARKER, seconds(60))) << vmm.Console();
  std::this_thread::sleep_for(milliseconds(500));  // well into the flood

  v1::ControlRequest describe;
  describe.mutable_describe();
  milliseconds took{};
  const v1::ControlResponse response = vmm.Call(describe, seconds(60), &took);

  EXPECT_EQ(response.code(), 0) << response.message();
  EXPECT_LT(took.count(), 1000) << "Describe took " << took.count() << " ms";
  EXPECT_TRUE(vmm.WaitForConsole("\nidle\n", seconds(120))) << vmm.Console();
  EXPECT_NE(vmm.Console().find("\nPASS blk-flood\n"), std::string::npos) << vmm.Console();
}

TEST(HostileBlk, ReadChainFloodLeavesTheVmmWithinItsMemoryMarginOfAQuietGuest) {
  EMBER_REQUIRE_KVM();
  ScopedTempDir control_dir("ember-hostile-blk"), flood_dir("ember-hostile-blk");
  const IdleVm control =
      RunUntilIdle(control_dir.path(),
                   GuestConfig("blk,idle", DriveMember(control_dir.path(), BlkPatternImage())));
  const IdleVm flood = RunUntilIdle(
      flood_dir.path(), GuestConfig("blk-flood,idle", DriveMember(flood_dir.path(), FloodImage())));

  ASSERT_NE(control.console.find("\nPASS blk\n"), std::string::npos) << control.console;
  EXPECT_NE(flood.console.find("\nPASS blk-flood\n"), std::string::npos) << flood.console;
  EXPECT_TRUE(OwnMemoryWithinMargin(flood, control, kRssMarginKib));
}

}  // namespace
}  // namespace ember::testing
