#include "vmm/restore.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "snapshot/memory_file.h"
#include "snapshot/snapshot_id.h"
#include "snapshot/state_file.h"
#include "tests/support/files.h"
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

// PrepareRestore's verdict on `state`, with `allow_dirs` as ember-vmm's --allow-dir.
absl::Status Prepare(const v1::SnapshotState& state, VmmOptions* options = nullptr,
                     const v1::RestoreOverrides& overrides = {},
                     const std::vector<std::string>& allow_dirs = {}) {
  SnapshotFiles files = WriteSnapshot(state);
  VmmOptions scratch;
  auto allowed = base::PathRules::Open(allow_dirs, "ember-vmm");
  EXPECT_TRUE(allowed.ok()) << allowed.status();
  if (!allowed.ok()) return allowed.status();
  return PrepareRestore(files.state_path, {files.memory_path}, overrides, *allowed,
                        options != nullptr ? options : &scratch);
}

// A state file crafted (its CRC right) to give a restoring VMM `path` as drive "data".
v1::SnapshotState StateWithDrive(const std::string& path) {
  v1::SnapshotState state = ValidState(128, 1);
  v1::Drive* drive = state.mutable_config()->add_drives();
  drive->set_drive_id("data");
  drive->set_path_on_host(path);
  return state;
}

// A root-only file (mode 0600) in a directory of its own, outside any allowed directory.
std::string RootOnlyFileElsewhere() {
  std::string path = testing::WriteTempFile("secret", "not a disk");
  EXPECT_EQ(::chmod(path.c_str(), 0600), 0);
  return path;
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

TEST(PrepareRestore, DrivePathFromTheStateFileIsRefusedWithoutAllowedDirectories) {
  const std::string secret = RootOnlyFileElsewhere();
  absl::Status status = Prepare(StateWithDrive(secret));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("drive \"data\": " + secret + " comes from the state file"),
            std::string::npos)
      << status;
  EXPECT_NE(status.message().find("--drive-override data=PATH"), std::string::npos) << status;
}

TEST(PrepareRestore, DrivePathFromTheStateFileOutsideTheAllowedDirectoriesIsRefused) {
  testing::ScopedTempDir allowed("ember-allowed");
  const std::string secret = RootOnlyFileElsewhere();
  absl::Status status = Prepare(StateWithDrive(secret), nullptr, {}, {allowed.path()});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("drive \"data\" (its path from the state file): " + secret +
                                  " is outside the allowed directories"),
            std::string::npos)
      << status;
}

TEST(PrepareRestore, DrivePathFromTheStateFileThroughASymlinkOutOfTheAllowedDirectoryIsRefused) {
  testing::ScopedTempDir allowed("ember-allowed");
  const std::string secret = RootOnlyFileElsewhere();
  const std::string link = allowed.path() + "/disk.img";
  ASSERT_EQ(::symlink(secret.c_str(), link.c_str()), 0);
  absl::Status status = Prepare(StateWithDrive(link), nullptr, {}, {allowed.path()});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("leads out of " + allowed.path()), std::string::npos) << status;
}

TEST(PrepareRestore, DrivePathFromTheStateFileInsideAnAllowedDirectoryIsUsed) {
  testing::ScopedTempDir allowed("ember-allowed");
  const std::string disk = allowed.path() + "/disk.img";
  std::ofstream(disk) << std::string(4096, '\0');
  VmmOptions options;
  ASSERT_TRUE(Prepare(StateWithDrive(disk), &options, {}, {allowed.path()}).ok());
  EXPECT_EQ(options.config.drives(0).path_on_host(), disk);
}

TEST(PrepareRestore, AnOverriddenDriveNeedsNoAllowedDirectory) {
  v1::RestoreOverrides overrides;
  const std::string clone_disk = testing::WriteTempFile("clone.img", std::string(4096, '\0'));
  (*overrides.mutable_drive_path_on_host())["data"] = clone_disk;
  VmmOptions options;
  ASSERT_TRUE(Prepare(StateWithDrive(RootOnlyFileElsewhere()), &options, overrides).ok());
  EXPECT_EQ(options.config.drives(0).path_on_host(), clone_disk);
}

TEST(PrepareRestore, VsockPathFromTheStateFileIsRefusedWithoutAllowedDirectories) {
  v1::SnapshotState state = ValidState(128, 1);
  state.mutable_config()->mutable_vsock()->set_vsock_id("vsock0");
  state.mutable_config()->mutable_vsock()->set_guest_cid(3);
  state.mutable_config()->mutable_vsock()->set_uds_path("/etc/planted.sock");
  absl::Status status = Prepare(state);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("vsock socket: /etc/planted.sock comes from the state file"),
            std::string::npos)
      << status;
  v1::RestoreOverrides overrides;
  overrides.set_vsock_uds_path(testing::WriteTempFile("unused", "") + ".sock");
  EXPECT_TRUE(Prepare(state, nullptr, overrides).ok());
}

// A full memory file at `path` that a diff of `state` may name as its base (its size, and
// the trailer of a snapshot of its own); `state` becomes a DIFF naming it.
void AddBase(const std::string& path, v1::SnapshotState* state) {
  const std::string id = snapshot::NewSnapshotId();
  std::ofstream(path, std::ios::binary).close();
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(state->memory_file_size())), 0);
  std::ofstream(path, std::ios::binary | std::ios::app)
      << snapshot::EncodeMemoryTrailer(state->memory_file_size(), id);
  state->set_kind(v1::SnapshotState::DIFF);
  state->add_base_memory_files(path);
  state->add_base_memory_ids(id);
}

TEST(PrepareRestore, BaseMemoryFileFromTheStateFileOutsideItsDirectoryIsRefusedWithoutAllowedDirectories) {
  v1::SnapshotState state = ValidState(128, 1);
  const std::string base = testing::WriteTempFile("base.mem", "");  // a directory of its own
  AddBase(base, &state);
  absl::Status status = Prepare(state);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("base memory file 0 (its path from the state file): " + base +
                                  " is not in the state file's own directory"),
            std::string::npos)
      << status;
  EXPECT_NE(status.message().find("--allow-dir DIR"), std::string::npos) << status;
}

TEST(PrepareRestore, BaseMemoryFileFromTheStateFileOutsideTheAllowedDirectoriesIsRefused) {
  testing::ScopedTempDir allowed("ember-allowed");
  v1::SnapshotState state = ValidState(128, 1);
  const std::string base = testing::WriteTempFile("base.mem", "");
  AddBase(base, &state);
  absl::Status status = Prepare(state, nullptr, {}, {allowed.path()});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("base memory file 0 (its path from the state file): " + base +
                                  " is outside the allowed directories"),
            std::string::npos)
      << status;
}

TEST(PrepareRestore, BaseMemoryFileFromTheStateFileThroughASymlinkOutOfTheAllowedDirectoryIsRefused) {
  testing::ScopedTempDir allowed("ember-allowed");
  v1::SnapshotState state = ValidState(128, 1);
  const std::string base = testing::WriteTempFile("base.mem", "");
  const std::string link = allowed.path() + "/base.mem";
  ASSERT_EQ(::symlink(base.c_str(), link.c_str()), 0);
  AddBase(base, &state);
  state.set_base_memory_files(0, link);
  absl::Status status = Prepare(state, nullptr, {}, {allowed.path()});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("leads out of " + allowed.path()), std::string::npos) << status;
}

TEST(PrepareRestore, BaseMemoryFileInsideAnAllowedDirectoryIsUsed) {
  testing::ScopedTempDir allowed("ember-allowed");
  v1::SnapshotState state = ValidState(128, 1);
  AddBase(allowed.path() + "/base.mem", &state);
  VmmOptions options;
  absl::Status status = Prepare(state, &options, {}, {allowed.path()});
  EXPECT_TRUE(status.ok()) << status;
}

TEST(PrepareRestore, BaseMemoryFileBesideTheStateFileIsUsedWithoutAllowedDirectories) {
  v1::SnapshotState state = ValidState(128, 1);
  SnapshotFiles files = WriteSnapshot(state);  // where the state file will be
  const std::string dir = std::filesystem::path(files.state_path).parent_path();
  AddBase(dir + "/base.mem", &state);
  ASSERT_TRUE(snapshot::WriteStateFile(files.state_path, state).ok());
  auto none = base::PathRules::Open({}, "ember-vmm");
  ASSERT_TRUE(none.ok());
  VmmOptions options;
  absl::Status status = PrepareRestore(files.state_path, {files.memory_path}, {}, *none, &options);
  EXPECT_TRUE(status.ok()) << status;
}

// A DIFF whose base was handed over (--base-memory-file): its name from the state file now
// leads to a root-only file, and only the handed file is checked and mapped.
TEST(PrepareRestore, BaseMemoryFileHandedOverIsOpenedInsteadOfItsNameFromTheStateFile) {
  testing::ScopedTempDir dir("ember-handed");
  v1::SnapshotState state = ValidState(128, 1);
  AddBase(dir.path() + "/base.mem", &state);
  const std::string name = dir.path() + "/named.mem";
  ASSERT_EQ(::symlink("/etc/shadow", name.c_str()), 0);
  state.set_base_memory_files(0, name);
  SnapshotFiles files = WriteSnapshot(state);
  auto none = base::PathRules::Open({}, "ember-vmm");
  ASSERT_TRUE(none.ok());
  base::UniqueFd handed(::open((dir.path() + "/base.mem").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(handed);
  const std::string file = "/proc/self/fd/" + std::to_string(handed.Get());
  VmmOptions options;
  absl::Status status = PrepareRestore(files.state_path, {files.memory_path, "", {{name, file}}},
                                       {}, *none, &options);
  ASSERT_TRUE(status.ok()) << status;
  const std::vector<snapshot::MemoryFileRef> chain = RestoreChain(*options.restore);
  ASSERT_EQ(chain.size(), 2u);
  EXPECT_EQ(chain[0].path, name);  // what its own later diffs name it
  EXPECT_EQ(chain[0].file, file);
}

TEST(PrepareRestore, WithBasesHandedOverABaseNotAmongThemIsRefusedNotOpenedByName) {
  testing::ScopedTempDir allowed("ember-allowed");
  v1::SnapshotState state = ValidState(128, 1);
  AddBase(allowed.path() + "/base.mem", &state);  // would pass --allow-dir by name
  SnapshotFiles files = WriteSnapshot(state);
  auto rules = base::PathRules::Open({allowed.path()}, "ember-vmm");
  ASSERT_TRUE(rules.ok());
  VmmOptions options;
  absl::Status status = PrepareRestore(
      files.state_path, {files.memory_path, "", {{"/elsewhere.mem", "/dev/null"}}}, {}, *rules,
      &options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find(allowed.path() + "/base.mem is none of the files handed over"),
            std::string::npos)
      << status;
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

// The crafted state file of issue 21: a drive pointing at a root-only file outside every
// allowed directory. ember-vmm refuses it (exit 2, naming the drive and the path) before it
// opens the file or /dev/kvm.
TEST(VmmRestoreCli, CraftedStateFilesDriveOutsideTheAllowedDirectoriesIsRefused) {
  testing::ScopedTempDir allowed("ember-allowed");
  const std::string secret = RootOnlyFileElsewhere();
  SnapshotFiles files = WriteSnapshot(StateWithDrive(secret));
  for (const std::vector<std::string>& allow :
       {std::vector<std::string>{}, std::vector<std::string>{"--allow-dir", allowed.path()}}) {
    std::vector<std::string> argv = {testing::BinPath("ember-vmm"), "--restore-from",
                                     files.state_path, "--restore-mem", files.memory_path};
    argv.insert(argv.end(), allow.begin(), allow.end());
    testing::ProcessResult result = testing::RunProcess(argv);
    EXPECT_EQ(result.exit_code, 2) << result.err;
    EXPECT_NE(result.err.find("snapshot state file " + files.state_path + ": drive \"data\""),
              std::string::npos)
        << result.err;
    EXPECT_NE(result.err.find(secret), std::string::npos) << result.err;
    EXPECT_EQ(testing::ReadFile(secret), "not a disk");
  }
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
