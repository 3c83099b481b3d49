// Ember's own guest kernel (rootfs/kernel: Debian's linux-source with ember.config) built by
// build-kernel.sh, then booted under ember-vmm with a drive and a vsock device. The build takes
// ~13 minutes on 2 idle cores (52 on a loaded machine at nice 19, -j1) unless it is cached,
// hence the `slow` label.
//
// Guest code is emulated on the development machines (DESIGN.md), and the emulator cannot run
// XRSTOR (hence `noxsave`, which only this host needs) or INT3. So the kernel gets as far as
// its banner, its command line with ember-vmm's virtio-mmio devices, the memory and console
// set-up, and stops exactly at its int3 self-test (alternative_instructions), which this test
// checks against the vmlinux's own symbol. The kernel registers the command line's virtio-mmio
// devices later, with the level-0 parameters in do_initcalls: probing them, mounting a root and
// running ember-init need a host with hardware KVM.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <regex>
#include <string>

#include "tests/support/kvm_available.h"
#include "tests/support/process.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

constexpr char kBootArgs[] = "earlyprintk=ttyS0 console=ttyS0 reboot=k panic=1 noxsave";

// The address of `symbol` in `vmlinux` (nm), as ember-vmm prints a rip: "0x" and 16 digits.
std::string SymbolAddress(const std::string& vmlinux, const std::string& symbol) {
  ProcessResult nm = RunProcess({"/usr/bin/nm", vmlinux});
  std::smatch match;
  if (!std::regex_search(nm.out, match, std::regex("([0-9a-f]{16}) [tT] " + symbol + "\n"))) {
    return "";
  }
  return "0x" + match[1].str();
}

TEST(EmberKernelSlow, BootsUnderEmberUntilTheEmulatorStopsItsInt3SelfTest) {
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
  std::string int3_selftest = SymbolAddress(vmlinux, "int3_selftest_ip");
  ASSERT_FALSE(int3_selftest.empty()) << "no int3_selftest_ip in " << vmlinux;

  std::string drive = WriteTempFile("disk.img", std::string(1 << 20, '\0'));
  std::string uds = drive + ".vsock";
  std::string config =
      WriteTempFile("vm.json", R"({"boot-source": {"kernel_image_path": ")" + vmlinux +
                                   R"(", "boot_args": ")" + kBootArgs +
                                   R"("}, "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
          "drives": [{"drive_id": "disk", "path_on_host": ")" +
                                   drive + R"(", "is_root_device": false, "is_read_only": true}],
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
  EXPECT_TRUE(expect_within("Linux version ", 300));
  // ember-vmm appends one virtio_mmio.device= token per device, the drive's first.
  EXPECT_TRUE(expect_within(std::string("Kernel command line: ") + kBootArgs +
                                " virtio_mmio.device=4K@0xd0001000:5"
                                " virtio_mmio.device=4K@0xd0002000:6",
                            120));
  // "printk: console [ttyS0] enabled" in 6.1, "printk: legacy console [ttyS0] enabled" in 6.12.
  EXPECT_TRUE(expect_within("console [ttyS0] enabled", 300));
  ProcessResult result = vmm.Wait(seconds(600));
  std::printf("[ timing ] the VM ended after %lld ms\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - start)
                                         .count()));
  EXPECT_NE(result.err.find("(ELF vmlinux)"), std::string::npos) << result.err.substr(0, 2000);
  EXPECT_NE(result.err.find("instruction emulation failed at rip " + int3_selftest),
            std::string::npos)
      << "int3_selftest_ip is " << int3_selftest << "\n"
      << result.out.substr(result.out.size() > 6000 ? result.out.size() - 6000 : 0) << "\n"
      << result.err.substr(0, 2000);
}

}  // namespace
}  // namespace ember::testing
