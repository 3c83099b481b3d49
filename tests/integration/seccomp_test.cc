// ember-vmm's per-thread seccomp filters on real KVM: the test guest's scenarios pass under the
// enforced filters, and a forbidden system call from each thread kind ends the VMM with SIGSYS
// (or, in log mode, is let through). The forbidden call comes from ember-vmm-test-hooks, a
// test-only build of ember-vmm whose --test-forbidden-syscall flag does not exist in ember-vmm.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <string>
#include <vector>

#include "rootfs/testguest/blk_pattern.h"
#include "tests/support/kvm_available.h"
#include "tests/support/process.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

constexpr char kTestHooksVmm[] = TEST_HOOKS_VMM;

std::string ScenarioConfig(const std::string& scenarios, const std::string& drives = "[]") {
  return WriteTempFile("vm.json", R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=)" +
                                      scenarios + R"("}, "drives": )" + drives + "}");
}

std::string PatternDisk() {
  std::string image;
  for (std::uint32_t s = 0; s < BLK_DISK_SECTORS; ++s) {
    for (std::uint32_t i = 0; i < BLK_SECTOR_SIZE; ++i) {
      image.push_back(static_cast<char>(blk_initial(s, i)));
    }
  }
  return WriteTempFile("disk.img", image);
}

std::string Drive(const std::string& path, const std::string& engine) {
  return R"([{"drive_id": ")" BLK_DRIVE_ID R"(", "path_on_host": ")" + path +
         R"(", "is_root_device": false, "is_read_only": false, "io_engine": ")" + engine +
         R"(", "cache_type": "Writeback"}])";
}

ProcessResult RunVmm(const std::string& binary, std::vector<std::string> args) {
  args.insert(args.begin(), binary);
  return RunProcess(args, seconds(60));
}

TEST(VmmSeccomp, HelloPassesUnderEnforcedFilters) {
  EMBER_REQUIRE_KVM();
  ProcessResult result =
      RunVmm(BinPath("ember-vmm"),
             {"--seccomp", "enforce", "--log-level", "Debug", "--config", ScenarioConfig("hello"),
              "--metrics-path", WriteTempFile("metrics.json", "")});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("\nPASS hello\n"), std::string::npos) << result.out;
  // Both kinds were really installed.
  EXPECT_NE(result.err.find("seccomp filter \"vcpu\""), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("seccomp filter \"vmm\""), std::string::npos) << result.err;
}

TEST(VmmSeccomp, BlkPassesUnderEnforcedFiltersOnBothEngines) {
  EMBER_REQUIRE_KVM();
  for (const char* engine : {"Async", "Sync"}) {
    ProcessResult result =
        RunVmm(BinPath("ember-vmm"),
               {"--config", ScenarioConfig("hello,blk", Drive(PatternDisk(), engine))});
    EXPECT_EQ(result.exit_code, 0) << engine << ": " << result.err;
    EXPECT_NE(result.out.find("\nPASS blk\n"), std::string::npos) << engine << ": " << result.out;
  }
}

TEST(VmmSeccomp, SigtermStopsAFilteredVmCleanly) {
  EMBER_REQUIRE_KVM();
  // The stop path under the filters: signalfd read, the kick signal to the vCPU (tgkill), the
  // vCPU thread's exit, metrics written at the end.
  Process vmm({BinPath("ember-vmm"), "--config", ScenarioConfig("idle"), "--metrics-path",
               WriteTempFile("metrics.json", "")});
  ASSERT_TRUE(vmm.WaitForOutput("idle\n", seconds(30)));
  vmm.Signal(SIGTERM);
  ProcessResult result = vmm.Wait(seconds(30));
  EXPECT_EQ(result.term_signal, 0) << result.err;
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("stopped by"), std::string::npos) << result.err;
}

TEST(VmmSeccomp, ForbiddenCallOnTheVcpuThreadKillsTheVmmWithSigsys) {
  EMBER_REQUIRE_KVM();
  ProcessResult result = RunVmm(
      kTestHooksVmm, {"--test-forbidden-syscall", "vcpu", "--config", ScenarioConfig("hello")});
  EXPECT_EQ(result.term_signal, SIGSYS) << "exit " << result.exit_code << "\n" << result.err;
  EXPECT_EQ(result.out.find("PASS hello"), std::string::npos) << result.out;
}

TEST(VmmSeccomp, ForbiddenCallOnTheVmmThreadKillsTheVmmWithSigsys) {
  EMBER_REQUIRE_KVM();
  ProcessResult result = RunVmm(
      kTestHooksVmm, {"--test-forbidden-syscall", "vmm", "--config", ScenarioConfig("idle")});
  EXPECT_EQ(result.term_signal, SIGSYS) << "exit " << result.exit_code << "\n" << result.err;
}

TEST(VmmSeccomp, ForbiddenCallsAreLetThroughInLogModeAndTheChoiceIsLogged) {
  EMBER_REQUIRE_KVM();
  for (const char* kind : {"vcpu", "vmm"}) {
    ProcessResult result = RunVmm(kTestHooksVmm, {"--seccomp", "log", "--test-forbidden-syscall",
                                                  kind, "--config", ScenarioConfig("hello")});
    EXPECT_EQ(result.term_signal, 0) << kind << ": " << result.err;
    EXPECT_EQ(result.exit_code, 0) << kind << ": " << result.err;
    EXPECT_NE(result.out.find("\nPASS hello\n"), std::string::npos) << kind << ": " << result.out;
    EXPECT_NE(result.err.find("LOG mode"), std::string::npos) << result.err;
    EXPECT_NE(result.err.find(std::string("forbidden socket() on the ") + kind), std::string::npos)
        << result.err;
  }
}

TEST(VmmSeccomp, OffInstallsNoFilterAndSaysSo) {
  EMBER_REQUIRE_KVM();
  ProcessResult result = RunVmm(kTestHooksVmm, {"--seccomp", "off", "--test-forbidden-syscall",
                                                "vcpu", "--config", ScenarioConfig("hello")});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("seccomp filters are OFF"), std::string::npos) << result.err;
  // No filter, so the hook that follows an installed filter never ran.
  EXPECT_EQ(result.err.find("forbidden socket()"), std::string::npos) << result.err;
}

TEST(VmmSeccomp, UnknownSettingIsBadInput) {
  ProcessResult result = RunVmm(BinPath("ember-vmm"), {"--seccomp", "strict"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("is not enforce, log or off"), std::string::npos) << result.err;
}

TEST(VmmSeccomp, ProductionBinaryHasNoForbiddenSyscallFlag) {
  ProcessResult result = RunVmm(BinPath("ember-vmm"), {"--test-forbidden-syscall", "vcpu"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("unknown flag"), std::string::npos) << result.err;
}

}  // namespace
}  // namespace ember::testing
