// A guest that writes to COM1 without end (`serial-flood`) against ember-vmm on real KVM:
// the console file must stop at the cap the VM config sets.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "rootfs/testguest/hostile.h"
#include "tests/integration/hostile_vmm.h"
#include "tests/support/files.h"
#include "tests/support/kvm_available.h"
#include "tests/support/process.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

// console.max_bytes for the test: a quarter of what the guest writes.
constexpr std::uint64_t kConsoleCapBytes = SERIAL_FLOOD_BYTES / 4;

TEST(HostileConsole, SerialFloodStopsAtTheConsoleCap) {
  EMBER_REQUIRE_KVM();
  ScopedTempDir dir("ember-hostile-console");
  ControlledVmm vmm(dir.path(),
                    GuestConfig("serial-flood", R"("console": {"max_bytes": )" +
                                                    std::to_string(kConsoleCapBytes) + "}"));
  ASSERT_TRUE(vmm.ok()) << vmm.error();

  ProcessResult result = vmm.Wait(seconds(120));

  EXPECT_EQ(result.exit_code, 0) << result.err << ReadFile(vmm.log_path());
  EXPECT_LE(FileSize(vmm.console_path()), kConsoleCapBytes)
      << "the console holds " << FileSize(vmm.console_path()) << " bytes";
  // What came first is kept.
  EXPECT_EQ(vmm.Console().rfind("Ember test guest\n", 0), 0u) << vmm.Console().substr(0, 200);
}

}  // namespace
}  // namespace ember::testing
