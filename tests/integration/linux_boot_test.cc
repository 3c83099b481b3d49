// Proof that Ember boots a kernel nobody here wrote: Debian's cloud kernel, as a bzImage
// decompressed on the host. Guest code is emulated on the development machines (about a
// microsecond per instruction), so the test waits for the earliest messages that prove each
// point: banner, command line and e820 map (~14 s), then the CPU count (~20 s).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <regex>

#include "tests/support/debian_kernel.h"
#include "tests/support/kvm_available.h"
#include "tests/support/process.h"
#include "vmm/arch/x86_64/e820.h"
#include "vmm/arch/x86_64/layout.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

constexpr std::uint32_t kMemMib = 256;

std::vector<arch::E820Entry> ParseE820(const std::string& serial) {
  std::vector<arch::E820Entry> map;
  std::regex line(R"(BIOS-e820: \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\] (\w+))");
  for (std::sregex_iterator it(serial.begin(), serial.end(), line), end; it != end; ++it) {
    std::uint64_t first = std::stoull((*it)[1], nullptr, 16);
    std::uint64_t last = std::stoull((*it)[2], nullptr, 16);
    std::uint32_t type = (*it)[3] == "usable" ? arch::kE820Ram : arch::kE820Reserved;
    map.push_back({first, last - first + 1, type});
  }
  return map;
}

TEST(DebianKernel, BootsUnderEmberAndReportsWhatEmberSetUp) {
  EMBER_REQUIRE_KVM();
  std::string deb = FindKernelPackage();
  if (deb.empty()) {
    GTEST_SKIP() << "Debian's cloud kernel package is not in /var/cache/ember/debian-kernel; "
                    "tests/setup.sh downloads it";
  }
  std::string vmlinuz = ExtractVmlinuz(deb);
  ASSERT_FALSE(vmlinuz.empty()) << "no vmlinuz in " << deb;

  std::string config = WriteTempFile(
      "vm.json", R"({"boot-source": {"kernel_image_path": ")" + vmlinuz + R"(", "boot_args": ")" +
                     kDebianKernelBootArgs + R"("}, "machine-config": {"vcpu_count": 2, "mem_size_mib": )" +
                     std::to_string(kMemMib) + "}}");
  auto start = std::chrono::steady_clock::now();
  Process vmm({BinPath("ember-vmm"), "--config", config});
  auto expect_within = [&](const std::string& text, int timeout_s) {
    bool seen = vmm.WaitForOutput(text, seconds(timeout_s));
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start).count();
    std::string shown = text.substr(0, text.find_first_of("\r\n"));
    std::printf("[ timing ] \"%s\" %s after %lld ms\n", shown.c_str(), seen ? "seen" : "NOT seen",
                static_cast<long long>(ms));
    return seen;
  };

  ASSERT_TRUE(expect_within("Linux version ", 120));
  // Linux's early serial console ends lines with CR LF.
  ASSERT_TRUE(expect_within(std::string("Command line: ") + kDebianKernelBootArgs + "\r\n", 60));
  ASSERT_TRUE(expect_within("printk: bootconsole [earlyser0] enabled", 60));  // after the e820 map
  ASSERT_TRUE(expect_within("smpboot: Allowing", 120));
  ASSERT_TRUE(expect_within(" hotplug CPUs", 30));
  vmm.Signal(SIGTERM);
  ProcessResult result = vmm.Wait(seconds(30));
  EXPECT_EQ(result.exit_code, 0) << result.err;

  auto memory = base::GuestMemory::Create(arch::GuestRamRanges(std::uint64_t{kMemMib} << 20));
  ASSERT_TRUE(memory.ok());
  EXPECT_EQ(ParseE820(result.out), arch::BuildE820Map(*memory)) << result.out.substr(0, 2000);
  EXPECT_NE(result.out.find("smpboot: Allowing 2 CPUs, 0 hotplug CPUs"), std::string::npos)
      << result.out.substr(0, 4000);
  EXPECT_NE(result.err.find("bzImage, decompressed on the host"), std::string::npos) << result.err;
  // The kernel found the DSDT through the FADT and parsed the tables it needs this early
  // (XSDT, MADT) without complaint. It interprets the DSDT's AML only in acpi_early_init,
  // which this emulated boot does not reach: the unit tests check the AML with ACPICA's
  // own tools (iasl, acpiexec) instead.
  EXPECT_NE(result.out.find("ACPI: DSDT 0x00000000000E0"), std::string::npos)
      << result.out.substr(0, 4000);
  EXPECT_EQ(result.out.find("ACPI Error"), std::string::npos) << result.out.substr(0, 4000);
  EXPECT_EQ(result.out.find("ACPI BIOS Error"), std::string::npos) << result.out.substr(0, 4000);
}

}  // namespace
}  // namespace ember::testing
