// A hostile driver of the virtio-mmio transport against ember-vmm on real KVM: status writes
// out of order (`status-order`: DRIVER_OK after FAILED, DRIVER_OK with a refused FEATURES_OK
// and then the fix without a reset) must leave a VM the host can still snapshot and restore.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "rootfs/testguest/hostile.h"
#include "tests/integration/hostile_vmm.h"
#include "tests/support/files.h"
#include "tests/support/kvm_available.h"
#include "tests/support/process.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

TEST(HostileStatus, SnapshotSucceedsAfterStatusWritesOutOfOrder) {
  EMBER_REQUIRE_KVM();
  ScopedTempDir dir("ember-hostile-status");
  ControlledVmm vmm(dir.path(), GuestConfig("status-order",
                                            DriveMember(dir.path(), std::string(64 * 1024, '\0'))));
  ASSERT_TRUE(vmm.ok()) << vmm.error();
  ASSERT_TRUE(vmm.WaitForConsole(STATUS_ORDER_MARKER, seconds(60))) << vmm.Console();

  v1::ControlRequest pause, snapshot, resume;
  pause.mutable_pause();
  snapshot.mutable_create_snapshot()->set_state_path(dir.path() + "/vm.state");
  snapshot.mutable_create_snapshot()->set_memory_path(dir.path() + "/vm.mem");
  resume.mutable_resume();
  ASSERT_EQ(vmm.Call(pause, seconds(30)).code(), 0);
  const v1::ControlResponse snapshotted = vmm.Call(snapshot, seconds(60));
  ASSERT_EQ(vmm.Call(resume, seconds(30)).code(), 0);

  EXPECT_EQ(snapshotted.code(), 0) << snapshotted.message() << "\n" << ReadFile(vmm.log_path());
  ProcessResult result = vmm.Wait(seconds(60));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(vmm.Console().find("\nPASS status-order\n"), std::string::npos) << vmm.Console();
  if (snapshotted.code() != 0) return;
  // The snapshot is whole: restored, the guest finishes its scenario where it left off.
  ProcessResult restored =
      RunProcess({BinPath("ember-vmm"), "--restore-from", dir.path() + "/vm.state", "--restore-mem",
                  dir.path() + "/vm.mem", "--allow-dir", dir.path()},
                 seconds(60));
  EXPECT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_NE(restored.out.find("PASS status-order\n"), std::string::npos) << restored.out;
}

}  // namespace
}  // namespace ember::testing
