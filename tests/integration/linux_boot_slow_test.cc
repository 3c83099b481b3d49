// The standard boot path with Debian's cloud kernel: the bzImage decompresses itself in the
// guest. Under this workplace's emulated KVM that takes minutes: label `slow`.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdio>

#include "tests/support/debian_kernel.h"
#include "tests/support/kvm_available.h"
#include "tests/support/process.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

TEST(DebianKernelSlow, SelfDecompressingBzImageReachesItsBanner) {
  EMBER_REQUIRE_KVM();
  std::string deb = FindKernelPackage();
  if (deb.empty()) GTEST_SKIP() << "Debian's cloud kernel package is not downloaded";
  std::string vmlinuz = ExtractVmlinuz(deb);
  ASSERT_FALSE(vmlinuz.empty());
  std::string config = WriteTempFile(
      "vm.json", R"({"boot-source": {"kernel_image_path": ")" + vmlinuz + R"(", "boot_args": ")" +
                     kDebianKernelBootArgs + R"(", "decompress_on_host": false},
                     "machine-config": {"mem_size_mib": 256}})");
  auto start = std::chrono::steady_clock::now();
  Process vmm({BinPath("ember-vmm"), "--config", config});
  bool seen = vmm.WaitForOutput("Linux version ", seconds(1500));
  std::printf("[ timing ] banner %s after %lld s\n", seen ? "seen" : "NOT seen",
              static_cast<long long>(std::chrono::duration_cast<seconds>(
                                         std::chrono::steady_clock::now() - start).count()));
  vmm.Signal(SIGTERM);
  ProcessResult result = vmm.Wait(seconds(30));
  EXPECT_TRUE(seen) << result.out.substr(0, 2000);
  EXPECT_NE(result.err.find("bzImage, self-decompressing"), std::string::npos) << result.err;
}

}  // namespace
}  // namespace ember::testing
