// Snapshots of a running test guest, restored in new ember-vmm processes on real KVM.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include <cstring>
#include <functional>
#include <memory>
#include <regex>

#include "rootfs/testguest/blk_pattern.h"
#include "snapshot/state_file.h"
#include "tests/support/files.h"
#include "tests/support/kvm_available.h"
#include "tests/support/process.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

using ::ember::testing::ReadFile;

std::string MakeDisk() {
  std::string image;
  for (std::uint32_t s = 0; s < BLK_DISK_SECTORS; ++s) {
    for (std::uint32_t i = 0; i < BLK_SECTOR_SIZE; ++i) {
      image.push_back(static_cast<char>(blk_initial(s, i)));
    }
  }
  return WriteTempFile("disk.img", image);
}

// The highest "count N" in `out`, or 0.
int LastCount(const std::string& out) {
  int last = 0;
  std::regex count(R"(count (\d+)\n)");
  for (std::sregex_iterator it(out.begin(), out.end(), count), end; it != end; ++it) {
    last = std::stoi((*it)[1]);
  }
  return last;
}

// Waits up to 10 s for `text` to appear in the log file at `path`; true when it did.
bool WaitForLog(const std::string& path, const std::string& text) {
  for (int i = 0; i < 200 && ReadFile(path).find(text) == std::string::npos; ++i) usleep(50'000);
  return ReadFile(path).find(text) != std::string::npos;
}

struct Snapshot {
  std::string state;
  std::string memory;
  std::string disk;
  int count_at_snapshot = 0;
};

// Boots the counter scenario (then blk), snapshots it once it has counted to `at`, and kills
// the original VMM so only the snapshot remains.
Snapshot TakeSnapshot(int at) {
  Snapshot snap;
  snap.disk = MakeDisk();
  std::string dir = WriteTempFile("unused", "");
  dir = dir.substr(0, dir.rfind('/'));
  snap.state = dir + "/vm.state";
  snap.memory = dir + "/vm.mem";
  std::string config = WriteTempFile(
      "vm.json", R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=counter,blk"},
                     "drives": [{"drive_id": ")" BLK_DRIVE_ID R"(", "path_on_host": ")" +
                     snap.disk + R"(", "is_root_device": false}]})");
  Process vmm({BinPath("ember-vmm"), "--config", config, "--snapshot-path", snap.state,
               "--snapshot-mem-path", snap.memory, "--log-path", dir + "/vmm.log"});
  EXPECT_TRUE(vmm.WaitForOutput("count " + std::to_string(at) + "\n", seconds(60)));
  vmm.Signal(SIGUSR1);
  bool written = WaitForLog(dir + "/vmm.log", "snapshot written");
  vmm.Signal(SIGKILL);
  ProcessResult original = vmm.Wait(seconds(10));
  EXPECT_TRUE(written) << ReadFile(dir + "/vmm.log");
  // The original was paused for the snapshot; whatever it printed before is the floor.
  snap.count_at_snapshot = at;
  return snap;
}

// The state file names the snapshotted VM's disk, which ember-vmm takes only from a directory
// its restorer allows.
std::vector<std::string> RestoreArgs(const Snapshot& snap) {
  return {BinPath("ember-vmm"), "--restore-from", snap.state, "--restore-mem", snap.memory,
          "--allow-dir", snap.disk.substr(0, snap.disk.rfind('/'))};
}

class SnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override { EMBER_REQUIRE_KVM(); }
};

// A jail's RLIMIT_FSIZE that a snapshot's memory file would pass must fail that snapshot
// (EFBIG), not kill the VM with SIGXFSZ: the guest goes on as after any failed snapshot.
TEST_F(SnapshotTest, MemoryFilePastTheFileSizeLimitFailsTheSnapshotNotTheVm) {
  std::string dir = WriteTempFile("unused", "");
  dir = dir.substr(0, dir.rfind('/'));
  std::string config = WriteTempFile(
      "vm.json", R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=counter"},
                     "machine-config": {"vcpu_count": 1, "mem_size_mib": 32}})");
  // The guest's memory is exactly at the limit; its memory file needs a trailer more.
  Process vmm({"/usr/bin/prlimit", "--fsize=" + std::to_string(32 << 20), "--",
               BinPath("ember-vmm"), "--config", config, "--snapshot-path", dir + "/vm.state",
               "--snapshot-mem-path", dir + "/vm.mem", "--log-path", dir + "/vmm.log"});
  ASSERT_TRUE(vmm.WaitForOutput("count 2\n", seconds(60)));
  vmm.Signal(SIGUSR1);
  EXPECT_TRUE(WaitForLog(dir + "/vmm.log", "snapshot failed")) << ReadFile(dir + "/vmm.log");
  ProcessResult result = vmm.Wait(seconds(120));
  EXPECT_EQ(result.term_signal, 0) << result.err;
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("PASS counter"), std::string::npos) << result.out;
}

TEST_F(SnapshotTest, RestoredGuestCountsOnWithoutRebootAndItsMemoryIntact) {
  Snapshot snap = TakeSnapshot(3);
  ProcessResult restored = RunProcess(RestoreArgs(snap), seconds(120));
  EXPECT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_EQ(restored.out.find("Ember test guest"), std::string::npos) << "the guest rebooted";
  std::smatch first;
  ASSERT_TRUE(std::regex_search(restored.out, first, std::regex(R"(count (\d+)\n)")))
      << restored.out;
  // The first count after restore follows the last one before the snapshot.
  EXPECT_GE(std::stoi(first[1]), snap.count_at_snapshot);
  EXPECT_LE(std::stoi(first[1]), snap.count_at_snapshot + 2);
  EXPECT_EQ(LastCount(restored.out), 40);
  EXPECT_NE(restored.out.find("checksum ok\nPASS counter\n"), std::string::npos) << restored.out;
}

TEST_F(SnapshotTest, BlockRequestsWorkAfterRestore) {
  Snapshot snap = TakeSnapshot(3);
  ProcessResult restored = RunProcess(RestoreArgs(snap), seconds(120));
  EXPECT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_NE(restored.out.find("PASS blk\n"), std::string::npos) << restored.out;
  std::string disk = ReadFile(snap.disk);
  ASSERT_EQ(disk.size(), BLK_DISK_SECTORS * BLK_SECTOR_SIZE);
  EXPECT_EQ(static_cast<std::uint8_t>(disk[BLK_WRITE_FIRST * BLK_SECTOR_SIZE]),
            blk_written(BLK_WRITE_FIRST, 0));
}

TEST_F(SnapshotTest, TenClonesRunAtOnceEachWithItsOwnDisk) {
  Snapshot snap = TakeSnapshot(30);
  constexpr int kClones = 10;
  std::vector<std::string> disks;
  std::vector<std::unique_ptr<Process>> clones;
  for (int i = 0; i < kClones; ++i) {
    disks.push_back(MakeDisk());
    std::vector<std::string> args = RestoreArgs(snap);
    args.push_back("--drive-override");
    args.push_back(std::string(BLK_DRIVE_ID) + "=" + disks.back());
    clones.push_back(std::make_unique<Process>(args));
  }
  for (int i = 0; i < kClones; ++i) {
    ProcessResult result = clones[static_cast<std::size_t>(i)]->Wait(seconds(180));
    EXPECT_EQ(result.exit_code, 0) << "clone " << i << ": " << result.err;
    EXPECT_GT(LastCount(result.out), snap.count_at_snapshot) << "clone " << i;
    EXPECT_NE(result.out.find("PASS counter\n"), std::string::npos) << result.out;
    EXPECT_NE(result.out.find("PASS blk\n"), std::string::npos) << result.out;
    // Each clone wrote its own disk; the snapshot's original disk stays untouched.
    std::string disk = ReadFile(disks[static_cast<std::size_t>(i)]);
    EXPECT_EQ(static_cast<std::uint8_t>(disk[BLK_WRITE_FIRST * BLK_SECTOR_SIZE]),
              blk_written(BLK_WRITE_FIRST, 0)) << "clone " << i;
  }
  EXPECT_EQ(static_cast<std::uint8_t>(ReadFile(snap.disk)[BLK_WRITE_FIRST * BLK_SECTOR_SIZE]),
            blk_initial(BLK_WRITE_FIRST, 0));
}

// The counter guest with dirty tracking, a full snapshot at count 3 into dir/vm.state and
// dir/vm.mem, more counting, then a diff at count 10 (vm.state-diff1, vm.mem-diff1).
void TakeFullThenDiff(const std::string& dir) {
  std::string state = dir + "/vm.state", memory = dir + "/vm.mem", log = dir + "/vmm.log";
  std::string config = WriteTempFile(
      "vm.json", R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=counter"},
                     "machine-config": {"track_dirty_pages": true}})");
  Process vmm({BinPath("ember-vmm"), "--config", config, "--snapshot-path", state,
               "--snapshot-mem-path", memory, "--log-path", log});
  ASSERT_TRUE(vmm.WaitForOutput("count 3\n", seconds(60)));
  vmm.Signal(SIGUSR1);
  ASSERT_TRUE(WaitForLog(log, "snapshot written")) << ReadFile(log);
  ASSERT_TRUE(vmm.WaitForOutput("count 10\n", seconds(60)));
  vmm.Signal(SIGUSR2);
  ASSERT_TRUE(WaitForLog(log, "diff snapshot written")) << ReadFile(log);
  vmm.Signal(SIGKILL);
  vmm.Wait(seconds(10));
}

// Restoring the diff (laid over the full one) resumes at 10, and so does the merged full
// snapshot.
TEST_F(SnapshotTest, DiffSnapshotRestoresTheLaterStateAndMergesIntoAFullOne) {
  std::string dir = WriteTempFile("unused", "");
  dir = dir.substr(0, dir.rfind('/'));
  std::string state = dir + "/vm.state", memory = dir + "/vm.mem";
  ASSERT_NO_FATAL_FAILURE(TakeFullThenDiff(dir));

  // The diff holds only what changed: far fewer blocks on disk than the full snapshot.
  struct stat full_st {}, diff_st {};
  ASSERT_EQ(::stat(memory.c_str(), &full_st), 0);
  ASSERT_EQ(::stat((memory + "-diff1").c_str(), &diff_st), 0);
  EXPECT_EQ(diff_st.st_size, full_st.st_size);
  EXPECT_LT(diff_st.st_blocks, full_st.st_blocks);

  auto expect_resumes_at_ten = [](const ProcessResult& result) {
    EXPECT_EQ(result.exit_code, 0) << result.err;
    std::smatch first;
    ASSERT_TRUE(std::regex_search(result.out, first, std::regex(R"(count (\d+)\n)")))
        << result.out;
    EXPECT_GE(std::stoi(first[1]), 10);
    EXPECT_NE(result.out.find("checksum ok\nPASS counter\n"), std::string::npos) << result.out;
  };
  expect_resumes_at_ten(RunProcess({BinPath("ember-vmm"), "--restore-from", state + "-diff1",
                                    "--restore-mem", memory + "-diff1"},
                                   seconds(120)));

  ProcessResult merged = RunProcess({BinPath("ember-snapshot"), "merge", "--state",
                                     state + "-diff1", "--mem", memory + "-diff1", "--out-state",
                                     dir + "/merged.state", "--out-mem", dir + "/merged.mem"});
  ASSERT_EQ(merged.exit_code, 0) << merged.err;
  expect_resumes_at_ten(RunProcess({BinPath("ember-vmm"), "--restore-from", dir + "/merged.state",
                                    "--restore-mem", dir + "/merged.mem"},
                                   seconds(120)));
}

// Occurrences of `text` in the file at `path`.
int CountInFile(const std::string& path, const std::string& text) {
  std::string contents = ReadFile(path);
  int count = 0;
  for (std::size_t at = contents.find(text); at != std::string::npos;
       at = contents.find(text, at + 1)) {
    ++count;
  }
  return count;
}

// SIGUSR1 again after a diff writes a new full snapshot over the diff's base: the diff, laid
// over that, would be a guest that never was. Its restore must refuse the chain.
TEST_F(SnapshotTest, DiffWhoseBaseALaterFullSnapshotReplacedIsRefused) {
  std::string dir = WriteTempFile("unused", "");
  dir = dir.substr(0, dir.rfind('/'));
  std::string state = dir + "/vm.state", memory = dir + "/vm.mem", log = dir + "/vmm.log";
  std::string config = WriteTempFile(
      "vm.json", R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=counter"},
                     "machine-config": {"track_dirty_pages": true}})");
  Process vmm({BinPath("ember-vmm"), "--config", config, "--snapshot-path", state,
               "--snapshot-mem-path", memory, "--log-path", log});
  const std::string full_written = "snapshot written to " + state + " and";
  ASSERT_TRUE(vmm.WaitForOutput("count 3\n", seconds(60)));
  vmm.Signal(SIGUSR1);
  ASSERT_TRUE(WaitForLog(log, full_written)) << ReadFile(log);
  ASSERT_TRUE(vmm.WaitForOutput("count 6\n", seconds(60)));
  vmm.Signal(SIGUSR2);
  ASSERT_TRUE(WaitForLog(log, "diff snapshot written")) << ReadFile(log);
  ASSERT_TRUE(vmm.WaitForOutput("count 9\n", seconds(60)));
  vmm.Signal(SIGUSR1);
  for (int i = 0; i < 200 && CountInFile(log, full_written) < 2; ++i) usleep(50'000);
  ASSERT_EQ(CountInFile(log, full_written), 2) << ReadFile(log);
  vmm.Signal(SIGKILL);
  vmm.Wait(seconds(10));

  ProcessResult result = RunProcess({BinPath("ember-vmm"), "--restore-from", state + "-diff1",
                                     "--restore-mem", memory + "-diff1"},
                                    seconds(30));
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("snapshot memory file " + memory + " belongs to snapshot "),
            std::string::npos)
      << result.err;
  EXPECT_EQ(result.out, "");
}

// A VM restored from vm.mem-diff1 with the same snapshot paths would number its own first diff
// -diff1 too: that diff must be refused rather than replace the base the VM runs on.
TEST_F(SnapshotTest, DiffOfARestoredDiffIsNeverWrittenOverItsOwnBase) {
  std::string dir = WriteTempFile("unused", "");
  dir = dir.substr(0, dir.rfind('/'));
  std::string state = dir + "/vm.state", memory = dir + "/vm.mem", log = dir + "/restored.log";
  ASSERT_NO_FATAL_FAILURE(TakeFullThenDiff(dir));
  const std::string base = ReadFile(memory + "-diff1");

  Process restored({BinPath("ember-vmm"), "--restore-from", state + "-diff1", "--restore-mem",
                    memory + "-diff1", "--snapshot-path", state, "--snapshot-mem-path", memory,
                    "--log-path", log});
  ASSERT_TRUE(restored.WaitForOutput("count 12\n", seconds(60)));
  restored.Signal(SIGUSR2);
  ASSERT_TRUE(WaitForLog(log, "snapshot failed")) << ReadFile(log);
  EXPECT_NE(ReadFile(log).find("is the input " + memory + "-diff1"), std::string::npos)
      << ReadFile(log);
  ProcessResult result = restored.Wait(seconds(120));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("checksum ok\nPASS counter\n"), std::string::npos) << result.out;
  EXPECT_TRUE(ReadFile(memory + "-diff1") == base) << "the base was rewritten";
}

// A diff snapshot that fails (here: its memory file's path is a directory) has already taken
// the dirty-page record; the next diff must still hold the pages written before the failure.
// The guest counts (full snapshot), then fills 32 MiB in its `touch` scenario and waits, so
// those pages are written after the full snapshot and never again.
TEST_F(SnapshotTest, DiffAfterAFailedDiffHoldsThePagesWrittenBeforeTheFailure) {
  // rootfs/testguest/touch_scenario.c: one word per page, below the MMIO gap, where the
  // memory file's offsets are guest addresses.
  constexpr std::uint64_t kTouchBase = 0x4000000;
  constexpr std::uint32_t kTouchPages = 8192;
  std::string dir = WriteTempFile("unused", "");
  dir = dir.substr(0, dir.rfind('/'));
  std::string state = dir + "/vm.state", memory = dir + "/vm.mem", log = dir + "/vmm.log";
  std::string config = WriteTempFile(
      "vm.json", R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=counter,touch"},
                     "machine-config": {"track_dirty_pages": true}})");
  Process vmm({BinPath("ember-vmm"), "--config", config, "--snapshot-path", state,
               "--snapshot-mem-path", memory, "--log-path", log});
  ASSERT_TRUE(vmm.WaitForOutput("count 2\n", seconds(60)));
  vmm.Signal(SIGUSR1);
  ASSERT_TRUE(WaitForLog(log, "snapshot written")) << ReadFile(log);
  ASSERT_TRUE(vmm.WaitForOutput("touch ready\n", seconds(120)));
  ASSERT_EQ(::mkdir((memory + "-diff1").c_str(), 0755), 0);
  vmm.Signal(SIGUSR2);
  ASSERT_TRUE(WaitForLog(log, "snapshot failed")) << ReadFile(log);
  vmm.Signal(SIGUSR2);
  ASSERT_TRUE(WaitForLog(log, "diff snapshot written to " + state + "-diff2")) << ReadFile(log);
  vmm.Signal(SIGKILL);
  vmm.Wait(seconds(10));

  // A page the diff left out is a hole and reads as zero; every touched word is odd.
  std::string diff = ReadFile(memory + "-diff2");
  ASSERT_GE(diff.size(), kTouchBase + std::uint64_t{kTouchPages} * 4096);
  std::uint32_t missing = 0;
  for (std::uint32_t page = 0; page < kTouchPages; ++page) {
    std::uint64_t word;
    std::memcpy(&word, diff.data() + kTouchBase + std::uint64_t{page} * 4096, sizeof(word));
    if (word != (std::uint64_t{page} * 0x9e3779b97f4a7c15ull | 1)) ++missing;
  }
  EXPECT_EQ(missing, 0u) << "of " << kTouchPages << " pages written before the failed diff";
}

TEST_F(SnapshotTest, DiffSnapshotWithoutDirtyTrackingIsRefusedAndTheVmRunsOn) {
  std::string dir = WriteTempFile("unused", "");
  dir = dir.substr(0, dir.rfind('/'));
  std::string config = WriteTempFile(
      "vm.json", R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=counter"}})");
  Process vmm({BinPath("ember-vmm"), "--config", config, "--snapshot-path", dir + "/s",
               "--snapshot-mem-path", dir + "/m"});
  ASSERT_TRUE(vmm.WaitForOutput("count 2\n", seconds(60)));
  vmm.Signal(SIGUSR2);
  ProcessResult result = vmm.Wait(seconds(120));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("track_dirty_pages"), std::string::npos) << result.err;
  EXPECT_NE(result.out.find("PASS counter"), std::string::npos);
}

// Every corrupt-file case: exit 2, one error line, and the files left as they were.
class CorruptSnapshotTest : public SnapshotTest {
 protected:
  void ExpectRefused(const std::string& state, const std::string& memory,
                     const std::string& expected) {
    std::string memory_before = ReadFile(memory);
    // Every test disk lies under /tmp: the state file's drive passes, its other faults show.
    ProcessResult result = RunProcess({BinPath("ember-vmm"), "--restore-from", state,
                                       "--restore-mem", memory, "--allow-dir", "/tmp"},
                                      seconds(30));
    EXPECT_EQ(result.exit_code, 2) << result.err;
    EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
    EXPECT_NE(result.err.find(expected), std::string::npos) << result.err;
    EXPECT_EQ(result.out, "");
    EXPECT_TRUE(ReadFile(memory) == memory_before) << "the memory file was modified";
  }

  static std::string Variant(const std::string& bytes) { return WriteTempFile("vm.state", bytes); }

  // A snapshot whose state `edit` bent (its CRC made right again) is refused with `expected`.
  void ExpectEditRefused(const std::function<void(v1::SnapshotState&)>& edit,
                         const std::string& expected) {
    Snapshot snap = TakeSnapshot(2);
    auto state = snapshot::DecodeState(ReadFile(snap.state));
    ASSERT_TRUE(state.ok()) << state.status();
    edit(*state);
    if (HasFatalFailure()) return;
    ExpectRefused(Variant(snapshot::EncodeState(*state)), snap.memory, expected);
  }
};

TEST_F(CorruptSnapshotTest, WrongMagicIsRefused) {
  Snapshot snap = TakeSnapshot(2);
  std::string bytes = ReadFile(snap.state);
  bytes[0] = 'X';
  ExpectRefused(Variant(bytes), snap.memory, "wrong magic");
}

TEST_F(CorruptSnapshotTest, UnknownVersionIsRefused) {
  Snapshot snap = TakeSnapshot(2);
  std::string bytes = ReadFile(snap.state);
  bytes[8] = 99;
  ExpectRefused(Variant(bytes), snap.memory, "format version 99");
}

TEST_F(CorruptSnapshotTest, FlippedPayloadBitFailsTheCrc) {
  Snapshot snap = TakeSnapshot(2);
  std::string bytes = ReadFile(snap.state);
  bytes[bytes.size() / 2] ^= 0x01;
  ExpectRefused(Variant(bytes), snap.memory, "CRC mismatch");
}

TEST_F(CorruptSnapshotTest, TruncatedStateFileIsRefused) {
  Snapshot snap = TakeSnapshot(2);
  std::string bytes = ReadFile(snap.state);
  bytes.resize(bytes.size() - 100);
  ExpectRefused(Variant(bytes), snap.memory, "truncated");
}

// kill -9 between the two renames of a snapshot left the state file of one snapshot and the
// memory file of the next: same VM, same size, different guest.
TEST_F(CorruptSnapshotTest, StateAndMemoryFilesOfTwoSnapshotsAreRefusedNamingTheMismatch) {
  Snapshot first = TakeSnapshot(2);
  Snapshot second = TakeSnapshot(3);
  ExpectRefused(first.state, second.memory,
                "snapshot state file " + first.state + ": snapshot memory file " +
                    second.memory + " belongs to snapshot ");
}

TEST_F(CorruptSnapshotTest, EmptiedRequiredCpuFeaturesAreRefused) {
  ExpectEditRefused(
      [](v1::SnapshotState& state) {
        state.clear_required_cpu_features();
      },
      "the snapshot lists 0 required CPU feature words; a snapshot lists 5");
}

// A blob of the right size that KVM itself would refuse (no irqchip 7) is the file's fault:
// exit 2, as for every other bad snapshot.
TEST_F(CorruptSnapshotTest, BadIrqchipBlobIsRefusedAsBadInput) {
  ExpectEditRefused(
      [](v1::SnapshotState& state) {
        std::string chip = state.vm().pic_master();
        ASSERT_GE(chip.size(), 4u);
        chip[0] = 7;  // kvm_irqchip.chip_id, little-endian
        state.mutable_vm()->set_pic_master(chip);
      },
      "vm state: saved pic_master is irqchip 7, not 0");
}

TEST_F(CorruptSnapshotTest, MemoryFileOfTheWrongSizeIsRefused) {
  Snapshot snap = TakeSnapshot(2);
  std::string short_memory = WriteTempFile("vm.mem", std::string(4096, '\0'));
  ExpectRefused(snap.state, short_memory, "expects");
}

TEST_F(CorruptSnapshotTest, SnapshotNeedingCpuFeaturesThisHostLacksIsRefused) {
  ExpectEditRefused(
      [](v1::SnapshotState& state) {
        // As if taken on a host with every feature bit: no real host has them all.
        for (int i = 0; i < state.required_cpu_features_size(); ++i) {
          state.set_required_cpu_features(i, 0xffffffff);
        }
      },
      "CPU features this host lacks");
}

// A state file whose CRC is right but whose layout is not Ember's: refused before any of it
// is mapped or created.
TEST_F(CorruptSnapshotTest, MemoryRegionInTheMmioGapIsRefused) {
  ExpectEditRefused(
      [](v1::SnapshotState& state) {
        ASSERT_EQ(state.memory_size(), 1);
        // The same memory file, its last page moved over the devices at the start of the gap.
        v1::MemoryRegion* low = state.mutable_memory(0);
        low->set_size(low->size() - 4096);
        v1::MemoryRegion* gap = state.add_memory();
        gap->set_guest_start(0xd0000000);
        gap->set_size(4096);
        gap->set_file_offset(low->size());
      },
      "it has 2 memory regions; a VM of 128 MiB has 1");
}

TEST_F(CorruptSnapshotTest, DuplicateVcpuIsRefused) {
  ExpectEditRefused(
      [](v1::SnapshotState& state) {
        ASSERT_EQ(state.vcpus_size(), 1);
        // Two vCPUs, as the configuration says, but both of them vCPU 0.
        state.mutable_config()->mutable_machine_config()->set_vcpu_count(2);
        v1::VcpuState copy = state.vcpus(0);
        *state.add_vcpus() = copy;
      },
      "vCPU id 0 appears twice");
}

// Neither needs KVM: ember-vmm refuses them before it opens /dev/kvm.
TEST(SnapshotPathTest, AFifoAsTheStateFileEndsARestoreAtOnceWithExitCode2) {
  ScopedTempDir dir("ember-snapshot-fifo");
  std::string fifo = dir.path() + "/vm.state";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // Killed when the bound passes: today's ember-vmm blocked opening it, SIGTERM blocked too.
  ProcessResult result = RunProcess(
      {BinPath("ember-vmm"), "--restore-from", fifo, "--restore-mem", dir.path() + "/vm.mem"},
      seconds(20));
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("snapshot state file " + fifo + " is a FIFO, not a regular file"),
            std::string::npos)
      << result.err;
}

TEST(SnapshotPathTest, ADirectoryOrDeviceNodeAsTheMemoryFileEndsARestoreWithExitCode2) {
  ScopedTempDir dir("ember-snapshot-dir");
  for (const std::string& memory : {dir.path(), std::string("/dev/null")}) {
    // Only the state file's own checks are passed: its memory file is checked next.
    v1::SnapshotState state;
    state.set_snapshot_id(std::string(16, 'x'));
    state.set_memory_file_size(128 << 20);
    std::string state_path = dir.path() + "/vm.state";
    ASSERT_TRUE(snapshot::WriteStateFile(state_path, state).ok());
    ProcessResult result = RunProcess(
        {BinPath("ember-vmm"), "--restore-from", state_path, "--restore-mem", memory},
        seconds(20));
    EXPECT_EQ(result.exit_code, 2) << result.err;
    EXPECT_NE(result.err.find("snapshot memory file " + memory + " is a"), std::string::npos)
        << result.err;
  }
}

}  // namespace
}  // namespace ember::testing
