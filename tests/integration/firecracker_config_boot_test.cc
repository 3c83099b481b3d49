// The test guest boots from config files shaped like those Firecracker publishes
// (tests/data/firecracker/), run as a Firecracker user runs them: relative paths, from the
// directory that holds them.
#include <gtest/gtest.h>

#include "tests/integration/firecracker_dir.h"
#include "tests/support/kvm_available.h"

namespace ember::testing {
namespace {

void ExpectBooted(const ProcessResult& result, const std::string& root_arg) {
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("Command line: console=ttyS0 reboot=k panic=1 pci=off "
                            "ember.test=hello " + root_arg),
            std::string::npos)
      << result.out;
  EXPECT_NE(result.out.find("\nPASS hello\n"), std::string::npos) << result.out;
}

TEST(FirecrackerConfigBoot, MinimalFileBoots) {
  EMBER_REQUIRE_KVM();
  FirecrackerDir dir("vm_config.json");
  ExpectBooted(dir.RunVmm(), "root=/dev/vda rw");
}

TEST(FirecrackerConfigBoot, FileWithEverySectionNullBoots) {
  EMBER_REQUIRE_KVM();
  FirecrackerDir dir("vm_config_null_sections.json");
  ExpectBooted(dir.RunVmm(), "root=/dev/vda rw");
}

TEST(FirecrackerConfigBoot, DeprecatedLogFifoAndMetricsFifoAreWrittenTo) {
  EMBER_REQUIRE_KVM();
  FirecrackerDir dir("vm_config_deprecated_names.json");
  ExpectBooted(dir.RunVmm(), "root=/dev/vda rw");
  EXPECT_NE(ReadFile(dir.Path("vmm.log")).find("VM ended"), std::string::npos);
  EXPECT_NE(ReadFile(dir.Path("vmm.metrics")).find("\"block_rootfs\""), std::string::npos)
      << ReadFile(dir.Path("vmm.metrics"));
}

}  // namespace
}  // namespace ember::testing
