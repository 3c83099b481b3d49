// Ember's own guest kernel (rootfs/kernel: Debian's linux-source with ember.config) built by
// build-kernel.sh, then booted under ember-vmm with a drive and a vsock device. The build takes
// ~13 minutes on 2 cores unless it is cached, hence the `slow` label.
//
// Guest code is emulated on the development machines (DESIGN.md): the kernel gets as far as
// its banner, its command line and the registration of the command line's virtio-mmio devices
// (parsed with the early parameters), and stops at its int3 self-test, before any driver
// probes a device. On a host with hardware KVM it boots to the end.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "tests/support/kvm_available.h"
#include "tests/support/process.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

constexpr char kBootArgs[] = "earlyprintk=ttyS0 console=ttyS0 reboot=k panic=1";

TEST(EmberKernelSlow, BuiltKernelRegistersTheCommandLinesVirtioDevices) {
  EMBER_REQUIRE_KVM();
  auto build_start = std::chrono::steady_clock::now();
  ProcessResult build =
      RunProcess({EMBER_SOURCE_DIR "/rootfs/kernel/build-kernel.sh"}, seconds(3 * 3600));
  ASSERT_EQ(build.exit_code, 0) << build.err.substr(
      build.err.size() > 4000 ? build.err.size() - 4000 : 0);
  std::printf("[ timing ] build-kernel.sh took %lld s\n",
              static_cast<long long>(std::chrono::duration_cast<seconds>(
                                         std::chrono::steady_clock::now() - build_start)
                                         .count()));
  std::string vmlinux = build.out.substr(0, build.out.find('\n'));
  ASSERT_EQ(access(vmlinux.c_str(), R_OK), 0) << "build-kernel.sh printed '" << build.out << "'";

  std::string drive = WriteTempFile("disk.img", std::string(1 << 20, '\0'));
  std::string uds = drive + ".vsock";
  std::string config =
      WriteTempFile("vm.json", R"({"boot-source": {"kernel_image_path": ")" + vmlinux +
                                   R"(", "boot_args": ")" + kBootArgs +
                                   R"("}, "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
          "drives": [{"drive_id": "disk", "path_on_host": ")" +
                                   drive +
                                   R"(", "is_root_device": false, "is_read_only": true}],
          "vsock": {"vsock_id": "vsock0", "guest_cid": 3, "uds_path": ")" +
                                   uds + R"("}})");
  auto start = std::chrono::steady_clock::now();
  Process vmm({BinPath("ember-vmm"), "--config", config});
  auto expect_within = [&](const std::string& text, int timeout_s) {
    bool seen = vmm.WaitForOutput(text, seconds(timeout_s));
    std::string shown = text.substr(0, text.find_first_of("\r\n"));
    std::printf("[ timing ] \"%s\" %s after %lld ms\n", shown.c_str(), seen ? "seen" : "NOT seen",
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::steady_clock::now() - start)
                                           .count()));
    return seen;
  };
  bool banner = expect_within("Linux version ", 300);
  bool cmdline = banner && expect_within(std::string("Command line: ") + kBootArgs, 120);
  // Ember appends one virtio_mmio.device= token per device; the kernel registers each as it
  // parses its early parameters.
  bool blk = cmdline && expect_within("virtio-mmio: Registering device virtio-mmio.0 at 0x", 120);
  bool vsock = blk && expect_within("virtio-mmio: Registering device virtio-mmio.1 at 0x", 60);
  vmm.Signal(SIGTERM);
  ProcessResult result = vmm.Wait(seconds(30));
  EXPECT_TRUE(banner && cmdline && blk && vsock) << result.out.substr(0, 6000) << "\n"
                                                 << result.err.substr(0, 2000);
  EXPECT_NE(result.err.find("(ELF vmlinux)"), std::string::npos) << result.err.substr(0, 2000);
}

}  // namespace
}  // namespace ember::testing
