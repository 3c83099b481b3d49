// ember-vmm booting the test guest on real KVM, run as a user runs it.
#include <gtest/gtest.h>
#include <signal.h>

#include <elf.h>
#include <algorithm>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <utility>

#include "tests/support/files.h"
#include "tests/support/kvm_available.h"
#include "tests/unit/boot/fake_bzimage.h"
#include "tests/support/process.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

constexpr char kDefaultCmdline[] = "console=ttyS0 reboot=k panic=1 pci=off ember.test=hello";

std::string Config(const std::string& json) { return WriteTempFile("vm.json", json); }

std::string BootArgsConfig(const std::string& boot_args, const std::string& machine = "{}") {
  return Config(R"({"boot-source": {"boot_args": ")" + boot_args + R"("}, "machine-config": )" +
                machine + "}");
}

ProcessResult RunVmm(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {BinPath("ember-vmm")};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, seconds(60));
}

TEST(VmmBoot, BuiltInGuestBootsRunsHelloAndEndsThroughI8042) {
  EMBER_REQUIRE_KVM();
  ProcessResult result = RunVmm({});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find(std::string("Ember test guest\nCommand line: ") + kDefaultCmdline +
                            "\n"),
            std::string::npos)
      << result.out;
  EXPECT_NE(result.out.find("\nPASS hello\n"), std::string::npos) << result.out;
  EXPECT_NE(result.err.find("i8042"), std::string::npos) << result.err;
}

TEST(VmmBoot, ConsoleStopsAtTheCapTheConfigSets) {
  EMBER_REQUIRE_KVM();
  ProcessResult result = RunVmm(
      {"--config", Config(R"({"boot-source": {"boot_args": ")" + std::string(kDefaultCmdline) +
                          R"("}, "console": {"max_bytes": 20}})")});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "Ember test guest\nCom");
  EXPECT_NE(result.err.find("console reached its cap of 20 bytes"), std::string::npos)
      << result.err;
}

TEST(VmmBoot, LogStopsAtTheCapTheConfigSets) {
  EMBER_REQUIRE_KVM();
  const std::string log = WriteTempFile("vmm.log", "");
  ProcessResult result = RunVmm(
      {"--config", Config(R"({"logger": {"log_path": ")" + log +
                          R"(", "level": "Debug", "max_bytes": 600}})")});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  const std::string logged = ReadFile(log);
  EXPECT_LE(logged.size(), 600u) << logged;
  EXPECT_NE(logged.find("reached its size cap of 600 bytes"), std::string::npos) << logged;
}

TEST(VmmBoot, GuestSeesExactlyTheCommandLineGiven) {
  EMBER_REQUIRE_KVM();
  const std::string cmdline = "console=ttyS0 ember.test=hello quiet marker=a,b=c  two-spaces";
  ProcessResult result = RunVmm({"--config", BootArgsConfig(cmdline)});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("Command line: " + cmdline + "\n"), std::string::npos) << result.out;
}

TEST(VmmBoot, UnknownScenarioIsReportedAsFailed) {
  EMBER_REQUIRE_KVM();
  ProcessResult result = RunVmm({"--config", BootArgsConfig("ember.test=hello,no-such-test")});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("PASS hello\nFAIL no-such-test unknown scenario\n"), std::string::npos)
      << result.out;
}

TEST(VmmBoot, TripleFaultEndsTheVmWithItsOwnCodeAndMessage) {
  EMBER_REQUIRE_KVM();
  ProcessResult result = RunVmm({"--config", BootArgsConfig("ember.test=triple-fault")});
  EXPECT_EQ(result.exit_code, 3) << result.err;
  EXPECT_NE(result.err.find("triple fault"), std::string::npos) << result.err;
  EXPECT_EQ(result.out.find("Resetting"), std::string::npos) << result.out;
}

TEST(VmmBoot, ExitRecordHoldsTheCodeAndReasonOfATripleFault) {
  EMBER_REQUIRE_KVM();
  std::string record = WriteTempFile("exit", "stale contents that must go");
  ProcessResult result = RunVmm(
      {"--exit-record", record, "--config", BootArgsConfig("ember.test=triple-fault")});
  EXPECT_EQ(result.exit_code, 3) << result.err;
  std::ifstream in(record);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.rfind("3 ", 0), 0u) << text;
  EXPECT_NE(text.find("triple fault"), std::string::npos) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
}

TEST(VmmBoot, SeveralVcpusAndMemoryAboveFourGiBBoot) {
  EMBER_REQUIRE_KVM();
  // 6 GiB puts 2.75 GiB above the MMIO gap; hello checks the e820 map the guest receives.
  ProcessResult result = RunVmm(
      {"--config", BootArgsConfig("ember.test=hello", R"({"vcpu_count": 4, "mem_size_mib": 6144})")});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("PASS hello"), std::string::npos) << result.out;
  EXPECT_NE(result.err.find("4 vCPU(s), 6144 MiB"), std::string::npos) << result.err;
}

TEST(VmmBoot, TwoVmsRunAtTheSameTimeWithoutInterfering) {
  EMBER_REQUIRE_KVM();
  Process first({BinPath("ember-vmm"), "--config", BootArgsConfig("ember.test=idle vm=first")});
  Process second({BinPath("ember-vmm"), "--config", BootArgsConfig("ember.test=idle vm=second")});
  // Both guests are running at once: each has reached its idle loop.
  ASSERT_TRUE(first.WaitForOutput("idle\n", seconds(30)));
  ASSERT_TRUE(second.WaitForOutput("idle\n", seconds(30)));
  first.Signal(SIGTERM);
  second.Signal(SIGTERM);
  ProcessResult a = first.Wait(seconds(30));
  ProcessResult b = second.Wait(seconds(30));
  EXPECT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(b.exit_code, 0) << b.err;
  EXPECT_NE(a.out.find("vm=first"), std::string::npos);
  EXPECT_EQ(a.out.find("vm=second"), std::string::npos);
  EXPECT_NE(b.out.find("vm=second"), std::string::npos);
  EXPECT_EQ(b.out.find("vm=first"), std::string::npos);
}

TEST(VmmBoot, SigtermStopsAnIdleVmCleanly) {
  EMBER_REQUIRE_KVM();
  Process vmm({BinPath("ember-vmm"), "--config", BootArgsConfig("ember.test=idle")});
  ASSERT_TRUE(vmm.WaitForOutput("idle\n", seconds(30)));
  vmm.Signal(SIGTERM);
  ProcessResult result = vmm.Wait(seconds(30));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("stopped by"), std::string::npos) << result.err;
}

// Pages of ember-vmm's read-only segments (code, constants) mapped into process `pid`, and the
// segments' size, from its smaps, in KiB.
std::pair<std::uint64_t, std::uint64_t> ProgramReadOnlyKib(pid_t pid, const std::string& program) {
  std::ifstream smaps("/proc/" + std::to_string(pid) + "/smaps");
  std::uint64_t rss = 0, size = 0;
  bool counted = false;
  std::string line;
  while (std::getline(smaps, line)) {
    std::istringstream fields(line);
    std::string first, perms, offset, dev, inode, path;
    fields >> first;
    if (first.find('-') != std::string::npos && first.back() != ':') {
      fields >> perms >> offset >> dev >> inode >> path;
      counted = path == program && perms.size() >= 2 && perms[1] != 'w';
      continue;
    }
    std::uint64_t kib = 0;
    fields >> kib;
    if (counted && first == "Size:") size += kib;
    if (counted && first == "Rss:") rss += kib;
  }
  return {rss, size};
}

TEST(VmmBoot, AnIdleVmHasGivenBackTheStartUpCodesPages) {
  EMBER_REQUIRE_KVM();
  // Building and booting the VM runs most of the binary once; the kernel maps 64 KiB around
  // each page it faults in, and an idle VM kept ~70% of its code and constants mapped.
  const std::string program = BinPath("ember-vmm");
  Process vmm({program, "--config", BootArgsConfig("ember.test=idle")});
  ASSERT_TRUE(vmm.WaitForOutput("idle\n", seconds(30)));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto [rss, size] = ProgramReadOnlyKib(vmm.pid(), program);
  vmm.Signal(SIGTERM);
  ASSERT_EQ(vmm.Wait(seconds(30)).exit_code, 0);
  ASSERT_GT(size, 0u) << "no read-only mapping of " << program;
  EXPECT_LT(rss * 2, size) << rss << " KiB of " << size << " KiB still mapped";
}

TEST(VmmBoot, BootTimeAndFirstInstructionAreRecordedInMetrics) {
  EMBER_REQUIRE_KVM();
  std::string metrics = WriteTempFile("metrics.json", "");
  ProcessResult result = RunVmm({"--metrics-path", metrics});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::stringstream text;
  text << std::ifstream(metrics).rdbuf();
  EXPECT_NE(text.str().find("\"boot_time_us\":"), std::string::npos) << text.str();
  EXPECT_EQ(text.str().find("\"boot_time_us\":0"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("\"start_to_first_instruction_us\":"), std::string::npos);
  EXPECT_NE(result.err.find("Guest-boot-time"), std::string::npos);
}

TEST(VmmBoot, KernelThatDoesNotFitInMemoryIsBadInput) {
  EMBER_REQUIRE_KVM();
  // A valid ELF whose only segment sits at 64 MiB, given a 32 MiB guest.
  Elf64_Ehdr ehdr{};
  std::memcpy(ehdr.e_ident, ELFMAG, SELFMAG);
  ehdr.e_ident[EI_CLASS] = ELFCLASS64;
  ehdr.e_ident[EI_DATA] = ELFDATA2LSB;
  ehdr.e_type = ET_EXEC;
  ehdr.e_machine = EM_X86_64;
  ehdr.e_entry = 64 << 20;
  ehdr.e_phoff = sizeof(ehdr);
  ehdr.e_phentsize = sizeof(Elf64_Phdr);
  ehdr.e_phnum = 1;
  Elf64_Phdr phdr{};
  phdr.p_type = PT_LOAD;
  phdr.p_paddr = 64 << 20;
  phdr.p_memsz = 4096;
  std::string image(reinterpret_cast<const char*>(&ehdr), sizeof(ehdr));
  image.append(reinterpret_cast<const char*>(&phdr), sizeof(phdr));
  std::string kernel = WriteTempFile("vmlinux", image);
  ProcessResult result = RunVmm({"--config", Config(R"({"boot-source": {"kernel_image_path": ")" +
                                                    kernel + R"("}, "machine-config": {"mem_size_mib": 32}})")});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("does not fit in guest memory"), std::string::npos) << result.err;
}

TEST(VmmBoot, FileThatIsNoKernelIsBadInput) {
  EMBER_REQUIRE_KVM();
  std::string kernel = WriteTempFile("vmlinux", std::string(4096, 'x'));
  ProcessResult result =
      RunVmm({"--config", Config(R"({"boot-source": {"kernel_image_path": ")" + kernel + R"("}})")});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("neither an ELF vmlinux nor a bzImage"), std::string::npos) << result.err;
}

TEST(VmmBoot, DriveWithMissingFileIsBadInput) {
  EMBER_REQUIRE_KVM();
  ProcessResult result = RunVmm({"--config", Config(R"({"drives": [{"drive_id": "data",
      "path_on_host": "/nonexistent/disk.img", "is_root_device": false}]})")});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("data"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("/nonexistent/disk.img"), std::string::npos) << result.err;
}

TEST(VmmBoot, DriveWhoseSizeIsNotWholeSectorsIsBadInput) {
  EMBER_REQUIRE_KVM();
  std::string image = WriteTempFile("disk.img", std::string(1000, 'x'));
  ProcessResult result = RunVmm({"--config", Config(R"({"drives": [{"drive_id": "data",
      "path_on_host": ")" + image + R"(", "is_root_device": false}]})")});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("512"), std::string::npos) << result.err;
}

TEST(VmmBoot, DrivesAreAnnouncedOnTheCommandLineRootFirst) {
  EMBER_REQUIRE_KVM();
  std::string data = WriteTempFile("data.img", std::string(4096, '\0'));
  std::string root = WriteTempFile("root.img", std::string(4096, '\0'));
  ProcessResult result = RunVmm({"--config", Config(
      R"({"boot-source": {"boot_args": "ember.test=hello"}, "drives": [
          {"drive_id": "data", "path_on_host": ")" + data + R"(", "is_root_device": false},
          {"drive_id": "root", "path_on_host": ")" + root + R"(", "is_root_device": true,
           "is_read_only": true}]})")});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("Command line: ember.test=hello root=/dev/vda ro "
                            "virtio_mmio.device=4K@0xd0001000:5 "
                            "virtio_mmio.device=4K@0xd0002000:6\n"),
            std::string::npos)
      << result.out;
}

TEST(VmmBoot, SixtyFourGiBGuestBootsAndCostsOnlyTouchedPages) {
  EMBER_REQUIRE_KVM();
  ProcessResult result =
      RunVmm({"--config", BootArgsConfig("ember.test=hello", R"({"mem_size_mib": 65536})")});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("PASS hello"), std::string::npos) << result.out;
}

TEST(VmmBoot, ThirtyTwoVcpusBoot) {
  EMBER_REQUIRE_KVM();
  ProcessResult result =
      RunVmm({"--config", BootArgsConfig("ember.test=hello", R"({"vcpu_count": 32})")});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("PASS hello"), std::string::npos) << result.out;
}

// Bad kernels and initrds given to the real binary: one line, exit code 2.
void ExpectKernelRefused(const std::string& kernel_bytes, const std::string& expected,
                         const std::string& extra_boot_source = "",
                         const std::string& machine = "{}") {
  std::string kernel = WriteTempFile("bzImage", kernel_bytes);
  ProcessResult result = RunVmm({"--config", Config(R"({"boot-source": {"kernel_image_path": ")" +
                                                    kernel + "\"" + extra_boot_source +
                                                    R"(}, "machine-config": )" + machine + "}")});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  EXPECT_NE(result.err.find(expected), std::string::npos) << result.err;
}

std::string BzImageBytes(FakeBzImage& fake) {
  return std::string(fake.bytes.begin(), fake.bytes.end());
}

TEST(VmmBoot, TruncatedBzImageIsBadInput) {
  EMBER_REQUIRE_KVM();
  FakeBzImage fake({0x1f, 0x8b, 1, 2, 3, 4}, 4096);
  ExpectKernelRefused(BzImageBytes(fake).substr(0, 0x300), "truncated");
}

TEST(VmmBoot, BzImageWithTooOldProtocolIsBadInput) {
  EMBER_REQUIRE_KVM();
  FakeBzImage fake({0x1f, 0x8b}, 4096);
  fake.header().version = 0x0206;
  fake.Commit();
  ExpectKernelRefused(BzImageBytes(fake), "too old");
}

TEST(VmmBoot, BzImageWhosePrefAddressWrapsIsBadInput) {
  EMBER_REQUIRE_KVM();
  FakeBzImage fake({0x89, 'L', 'Z', 'O'}, 4096);  // LZO: loaded at pref_address as it is
  fake.header().pref_address = 0xffff'ffff'ffff'f000;
  fake.Commit();
  ExpectKernelRefused(BzImageBytes(fake), "pref_address 0xfffffffffffff000");
}

TEST(VmmBoot, BzImageWithAnAlignmentThatIsNotAPowerOfTwoIsBadInput) {
  EMBER_REQUIRE_KVM();
  FakeBzImage fake({0x89, 'L', 'Z', 'O'}, 4096);
  fake.header().kernel_alignment = 0x300000;
  fake.Commit();
  ExpectKernelRefused(BzImageBytes(fake), "not a power of two");
}

TEST(VmmBoot, ThirtyTwoBitOnlyKernelIsBadInput) {
  EMBER_REQUIRE_KVM();
  FakeBzImage fake({0x1f, 0x8b}, 4096);
  fake.header().xloadflags = 0;
  fake.Commit();
  ExpectKernelRefused(BzImageBytes(fake), "32-bit-only");
}

TEST(VmmBoot, InitrdLargerThanMemoryIsBadInput) {
  EMBER_REQUIRE_KVM();
  FakeBzImage fake({0x89, 'L', 'Z', 'O'}, 4096);
  std::string initrd = WriteTempFile("initrd", std::string(40 << 20, 'i'));
  ExpectKernelRefused(BzImageBytes(fake), "does not fit", R"(, "initrd_path": ")" + initrd + "\"",
                      R"({"mem_size_mib": 32})");
}

TEST(VmmBoot, UnreadableInitrdIsBadInput) {
  EMBER_REQUIRE_KVM();
  FakeBzImage fake({0x89, 'L', 'Z', 'O'}, 4096);
  // A directory: it exists, but it is no initrd file.
  ExpectKernelRefused(BzImageBytes(fake), "initrd", R"(, "initrd_path": "/tmp")");
}

}  // namespace
}  // namespace ember::testing
