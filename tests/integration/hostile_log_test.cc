// A guest that has the virtio-mmio transport refuse its feature set thousands of times
// (`features-retry`) against ember-vmm on real KVM: each refusal is a line the VMM may
// log, and the log must stay small all the same.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "tests/integration/hostile_vmm.h"
#include "tests/support/files.h"
#include "tests/support/kvm_available.h"
#include "tests/support/process.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

// The log of a VMM whose guest had thousands of feature sets refused, with no size
// cap configured: a few lines a second get through the rate limit, with a count of the rest.
constexpr std::uint64_t kLogLimitBytes = 64 * 1024;

TEST(HostileLog, RefusedFeatureSetsWrittenOverAndOverStayOutOfTheLog) {
  EMBER_REQUIRE_KVM();
  ScopedTempDir dir("ember-hostile-log");
  ControlledVmm vmm(dir.path(), GuestConfig("features-retry",
                                            DriveMember(dir.path(), std::string(64 * 1024, '\0'))));
  ASSERT_TRUE(vmm.ok()) << vmm.error();

  ProcessResult result = vmm.Wait(seconds(120));

  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(vmm.Console().find("\nPASS features-retry\n"), std::string::npos) << vmm.Console();
  // Each refusal was a chance to log a line: enough of them that an unlimited log shows.
  EXPECT_GE(GuestCount(vmm.Console(), "features-retry: "), 1000u) << vmm.Console();
  EXPECT_LE(FileSize(vmm.log_path()), kLogLimitBytes)
      << "the log holds " << FileSize(vmm.log_path()) << " bytes\n"
      << vmm.Console();
}

}  // namespace
}  // namespace ember::testing
