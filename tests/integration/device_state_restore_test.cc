// A snapshot's devices are matched to the configured ones by id on restore (ember-vmm, real
// KVM): the order they were saved in does not matter, and a state file naming other devices
// is refused with exit code 2.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "rootfs/testguest/blk_pattern.h"
#include "snapshot/state_file.h"
#include "tests/support/files.h"
#include "tests/support/kvm_available.h"
#include "tests/support/process.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

struct Snapshot {
  std::string state;
  std::string memory;
  std::string uds;  // the vsock device's socket, which the killed VMM left behind
};

// Boots the counter scenario with a drive and a vsock device (two devices, saved in that
// order), snapshots it at count 2 and kills it.
Snapshot TakeSnapshot() {
  std::string dir = WriteTempFile("unused", "");
  dir = dir.substr(0, dir.rfind('/'));
  const std::string disk =
      WriteTempFile("disk.img", std::string(BLK_DISK_SECTORS * BLK_SECTOR_SIZE, '\0'));
  Snapshot snap{dir + "/vm.state", dir + "/vm.mem", dir + "/v.sock"};
  const std::string config = WriteTempFile(
      "vm.json", R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=counter"},
                     "drives": [{"drive_id": ")" BLK_DRIVE_ID R"(", "path_on_host": ")" + disk +
                     R"(", "is_root_device": false}],
                     "vsock": {"vsock_id": "vsock0", "guest_cid": 3, "uds_path": ")" + snap.uds +
                     R"("}})");
  Process vmm({BinPath("ember-vmm"), "--config", config, "--snapshot-path", snap.state,
               "--snapshot-mem-path", snap.memory, "--log-path", dir + "/vmm.log"});
  EXPECT_TRUE(vmm.WaitForOutput("count 2\n", seconds(60)));
  vmm.Signal(SIGUSR1);
  for (int i = 0; i < 200 && ReadFile(dir + "/vmm.log").find("snapshot written") ==
                                 std::string::npos; ++i) {
    usleep(50'000);
  }
  vmm.Signal(SIGKILL);
  vmm.Wait(seconds(10));
  EXPECT_NE(ReadFile(dir + "/vmm.log").find("snapshot written"), std::string::npos)
      << ReadFile(dir + "/vmm.log");
  return snap;
}

ProcessResult Restore(const v1::SnapshotState& state, const Snapshot& snap) {
  const std::string path = WriteTempFile("edited.state", snapshot::EncodeState(state));
  ::unlink(snap.uds.c_str());
  // The state file's drive and vsock paths, which ember-vmm takes only where its restorer
  // allows (every test file lies under /tmp).
  return RunProcess({BinPath("ember-vmm"), "--restore-from", path, "--restore-mem", snap.memory,
                     "--allow-dir", "/tmp"},
                    seconds(120));
}

class DeviceStateRestoreTest : public ::testing::Test {
 protected:
  void SetUp() override { EMBER_REQUIRE_KVM(); }
};

TEST_F(DeviceStateRestoreTest, DevicesSavedInAnotherOrderRestoreByTheirIds) {
  Snapshot snap = TakeSnapshot();
  auto state = snapshot::DecodeState(ReadFile(snap.state));
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_EQ(state->virtio_size(), 2);
  ASSERT_TRUE(state->virtio(0).has_block() && state->virtio(1).has_vsock());

  state->mutable_virtio()->SwapElements(0, 1);
  ProcessResult restored = Restore(*state, snap);

  EXPECT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_NE(restored.out.find("PASS counter"), std::string::npos) << restored.out << restored.err;
  EXPECT_EQ(restored.out.find("Ember test guest"), std::string::npos) << "the guest rebooted";
}

TEST_F(DeviceStateRestoreTest, AStateFileNamingAnotherDeviceIsRefusedWithExitCode2) {
  Snapshot snap = TakeSnapshot();
  auto state = snapshot::DecodeState(ReadFile(snap.state));
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_EQ(state->virtio_size(), 2);

  state->mutable_virtio(1)->set_id("vsock_other");
  ProcessResult result = Restore(*state, snap);

  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  EXPECT_NE(result.err.find("the snapshot's devices (block_" BLK_DRIVE_ID
                            ", vsock_other) are not the configured ones (block_" BLK_DRIVE_ID
                            ", vsock_vsock0)"),
            std::string::npos)
      << result.err;
  EXPECT_EQ(result.out, "");
}

}  // namespace
}  // namespace ember::testing
