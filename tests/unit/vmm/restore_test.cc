#include "vmm/restore.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "snapshot/memory_file.h"
#include "snapshot/snapshot_id.h"
#include "snapshot/state_file.h"
#include "tests/support/process.h"
#include "vmm/arch/x86_64/layout.h"

namespace ember::vmm {
namespace {

using arch::kMiB;

// A state file as Ember writes it for a VM of `mem_mib` MiB and `vcpus` vCPUs (only what
// PrepareRestore reads), which each test then bends one way.
v1::SnapshotState ValidState(std::uint32_t mem_mib, std::uint32_t vcpus) {
  v1::SnapshotState state;
  state.mutable_config()->mutable_machine_config()->set_mem_size_mib(mem_mib);
  state.mutable_config()->mutable_machine_config()->set_vcpu_count(vcpus);
  std::uint64_t offset = 0;
  for (const base::GuestMemory::Range& range : arch::GuestRamRanges(mem_mib * kMiB)) {
    v1::MemoryRegion* region = state.add_memory();
    region->set_guest_start(range.start);
    region->set_size(range.size);
    region->set_file_offset(offset);
    offset += range.size;
  }
  state.set_memory_file_size(offset);
  state.set_snapshot_id(snapshot::NewSnapshotId());
  for (std::uint32_t id = 0; id < vcpus; ++id) state.add_vcpus()->set_id(id);
  return state;
}

struct SnapshotFiles {
  std::string state_path;
  std::string memory_path;
};

// `state` written as a state file, with a (sparse) memory file of the size it records,
// ending in the trailer of the state's snapshot.
SnapshotFiles WriteSnapshot(const v1::SnapshotState& state) {
  SnapshotFiles files{testing::WriteTempFile("vm.state", ""), testing::WriteTempFile("vm.mem", "")};
  EXPECT_TRUE(snapshot::WriteStateFile(files.state_path, state).ok());
  EXPECT_EQ(::truncate(files.memory_path.c_str(), static_cast<off_t>(state.memory_file_size())),
            0);
  std::ofstream(files.memory_path, std::ios::binary | std::ios::app)
      << snapshot::EncodeMemoryTrailer(state.memory_file_size(), state.snapshot_id());
  return files;
}

// PrepareRestore's verdict on `state`.
absl::Status Prepare(const v1::SnapshotState& state, VmmOptions* options = nullptr,
                     const v1::RestoreOverrides& overrides = {}) {
  SnapshotFiles files = WriteSnapshot(state);
  VmmOptions scratch;
  return PrepareRestore(files.state_path, files.memory_path, overrides,
                        options != nullptr ? options : &scratch);
}

// A state file crafted to name host files a restoring VMM would write to.
v1::SnapshotState StateNamingLogAndMetricsFiles(const std::string& dir) {
  v1::SnapshotState state = ValidState(128, 1);
  state.mutable_config()->mutable_logger()->set_log_path(dir + "/planted.log");
  state.mutable_config()->mutable_metrics()->set_metrics_path(dir + "/planted.metrics");
  return state;
}

void ExpectRefused(const v1::SnapshotState& state, const std::string& expected) {
  absl::Status status = Prepare(state);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("does not match its configuration: " + expected),
            std::string::npos)
      << status;
}

TEST(PrepareRestore, StateMatchingItsConfigurationIsAccepted) {
  EXPECT_TRUE(Prepare(ValidState(128, 2)).ok());
  // Above the MMIO gap too: two regions, the second at 4 GiB and right after the first in
  // the memory file.
  EXPECT_TRUE(Prepare(ValidState(4096, 1)).ok());
}

TEST(PrepareRestore, ExtraMemoryRegionInTheMmioGapIsRefused) {
  v1::SnapshotState state = ValidState(128, 1);
  v1::MemoryRegion* low = state.mutable_memory(0);
  low->set_size(low->size() - 4096);
  v1::MemoryRegion* gap = state.add_memory();
  gap->set_guest_start(arch::kMmioGapStart);
  gap->set_size(4096);
  gap->set_file_offset(low->size());
  ExpectRefused(state, "it has 2 memory regions; a VM of 128 MiB has 1");
}

TEST(PrepareRestore, RegionLargerThanTheConfiguredMemoryIsRefused) {
  v1::SnapshotState state = ValidState(128, 1);
  state.mutable_memory(0)->set_size(256 * kMiB);
  state.set_memory_file_size(256 * kMiB);
  ExpectRefused(state, "memory region 0 is 0x10000000 bytes at 0x0; a VM of 128 MiB has "
                       "0x8000000 bytes at 0x0");
}

TEST(PrepareRestore, RegionMovedIntoTheMmioGapIsRefused) {
  v1::SnapshotState state = ValidState(4096, 1);
  state.mutable_memory(1)->set_guest_start(arch::kMmioGapStart);
  ExpectRefused(state, "memory region 1 is 0x30000000 bytes at 0xd0000000");
}

TEST(PrepareRestore, RegionAtTheWrongMemoryFileOffsetIsRefused) {
  v1::SnapshotState state = ValidState(4096, 1);
  state.mutable_memory(1)->set_file_offset(0);  // both regions backed by the same bytes
  ExpectRefused(state, "memory region 1 is at memory-file offset 0x0; it must be at 0xd0000000");
}

TEST(PrepareRestore, MemoryFileLargerThanTheRegionsIsRefused) {
  v1::SnapshotState state = ValidState(128, 1);
  state.set_memory_file_size(256 * kMiB);
  ExpectRefused(state, "it records a memory file of 268435456 bytes; its memory regions fill "
                       "134217728");
}

TEST(PrepareRestore, MoreVcpusThanTheConfigurationGivesAreRefused) {
  v1::SnapshotState state = ValidState(128, 2);
  state.mutable_config()->mutable_machine_config()->set_vcpu_count(1);
  ExpectRefused(state, "it has 2 vCPUs; its configuration gives 1");
}

TEST(PrepareRestore, DuplicateVcpuIdIsRefused) {
  v1::SnapshotState state = ValidState(128, 2);
  state.mutable_vcpus(1)->set_id(0);
  ExpectRefused(state, "vCPU id 0 appears twice");
}

TEST(PrepareRestore, VcpuIdBeyondTheCountIsRefused) {
  v1::SnapshotState state = ValidState(128, 2);
  state.mutable_vcpus(1)->set_id(7);
  ExpectRefused(state, "vCPU id 7 is out of range for 2 vCPUs");
}

TEST(PrepareRestore, StateFilesLogAndMetricsPathsAreNotTheRestoredVms) {
  VmmOptions options;
  ASSERT_TRUE(Prepare(StateNamingLogAndMetricsFiles("/etc"), &options).ok());
  EXPECT_EQ(options.config.logger().log_path(), "");
  EXPECT_EQ(options.config.metrics().metrics_path(), "");
}

TEST(PrepareRestore, OverridesReplaceTheDevicesTheyName) {
  v1::SnapshotState state = ValidState(128, 1);
  v1::Drive* drive = state.mutable_config()->add_drives();
  drive->set_drive_id("scratch");
  drive->set_path_on_host(testing::WriteTempFile("src.img", std::string(4096, '\0')));
  v1::RestoreOverrides overrides;
  std::string clone_disk = testing::WriteTempFile("clone.img", std::string(4096, '\0'));
  (*overrides.mutable_drive_path_on_host())["scratch"] = clone_disk;
  VmmOptions options;
  ASSERT_TRUE(Prepare(state, &options, overrides).ok());
  EXPECT_EQ(options.config.drives(0).path_on_host(), clone_disk);
}

TEST(PrepareRestore, OverrideOfADriveTheSnapshotLacksIsNamed) {
  v1::RestoreOverrides overrides;
  (*overrides.mutable_drive_path_on_host())["data"] = "/tmp/data.img";
  absl::Status status = Prepare(ValidState(128, 1), nullptr, overrides);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "overrides.drive_path_on_host: the snapshot has no drive \"data\"");
}

TEST(VmmRestoreCli, RestoredVmNeverOpensTheLogFileItsStateFileNames) {
  std::string dir = std::filesystem::path(testing::WriteTempFile("dir-marker", "")).parent_path();
  SnapshotFiles files = WriteSnapshot(StateNamingLogAndMetricsFiles(dir));
  // However far the restore gets here (this state holds no vCPU registers; the machine may
  // have no KVM), the log is configured first.
  testing::ProcessResult result = testing::RunProcess(
      {testing::BinPath("ember-vmm"), "--restore-from", files.state_path, "--restore-mem",
       files.memory_path});
  EXPECT_NE(result.exit_code, 0) << result.err;
  EXPECT_FALSE(std::filesystem::exists(dir + "/planted.log")) << result.err;
  EXPECT_FALSE(std::filesystem::exists(dir + "/planted.metrics")) << result.err;
}

TEST(VmmRestoreCli, OverridesMessageFileThatDoesNotParseIsNamed) {
  SnapshotFiles files = WriteSnapshot(ValidState(128, 1));
  std::string garbage = testing::WriteTempFile("overrides.pb", std::string("\xff\xff\xff", 3));
  testing::ProcessResult result = testing::RunProcess(
      {testing::BinPath("ember-vmm"), "--restore-from", files.state_path, "--restore-mem",
       files.memory_path, "--restore-overrides", garbage});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("is not a binary ember.v1.RestoreOverrides message"),
            std::string::npos)
      << result.err;
}

TEST(VmmRestoreCli, OverridesMessageIsAppliedToTheSnapshotsConfiguration) {
  SnapshotFiles files = WriteSnapshot(ValidState(128, 1));
  v1::RestoreOverrides overrides;
  (*overrides.mutable_drive_path_on_host())["nope"] = "/tmp/nope.img";
  std::string message = testing::WriteTempFile("overrides.pb", overrides.SerializeAsString());
  testing::ProcessResult result = testing::RunProcess(
      {testing::BinPath("ember-vmm"), "--restore-from", files.state_path, "--restore-mem",
       files.memory_path, "--restore-overrides", message});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("overrides.drive_path_on_host: the snapshot has no drive \"nope\""),
            std::string::npos)
      << result.err;
}

}  // namespace
}  // namespace ember::vmm
