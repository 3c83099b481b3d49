#include "vmm/emberd/snapshot_catalog.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/support/files.h"

namespace ember::emberd {
namespace {

using ::ember::testing::ReadFile;

class SnapshotCatalogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto catalog = SnapshotCatalog::Create(dir_);
    ASSERT_TRUE(catalog.ok()) << catalog.status();
    catalog_ = std::move(*catalog);
  }

  // A snapshot of `vm_id` taken at `unix_ms` as CreateSnapshot begins it: reserved, its
  // directories made and its pending record written, its files in `dir` (default: its
  // record directory) not yet.
  v1::Snapshot Begun(const std::string& vm_id, std::int64_t unix_ms, const std::string& base = "",
                     std::string dir = "") {
    v1::Snapshot snapshot;
    snapshot.set_snapshot_id(catalog_->Reserve(vm_id, unix_ms));
    if (dir.empty()) dir = catalog_->RecordDir(snapshot.snapshot_id());
    snapshot.set_vm_id(vm_id);
    snapshot.set_type(base.empty() ? v1::CreateSnapshotRequest::FULL
                                   : v1::CreateSnapshotRequest::DIFF);
    snapshot.set_base_snapshot_id(base);
    snapshot.set_state_path(dir + "/state");
    snapshot.set_memory_path(dir + "/memory");
    snapshot.set_created_unix_ms(unix_ms);
    absl::Status begun = catalog_->Begin(snapshot, v1::VmConfig());
    EXPECT_TRUE(begun.ok()) << begun;
    return snapshot;
  }

  // A finished snapshot of `vm_id` taken at `unix_ms`, its files in its record directory.
  v1::Snapshot Finished(const std::string& vm_id, std::int64_t unix_ms,
                        const std::string& base = "") {
    v1::Snapshot snapshot = Begun(vm_id, unix_ms, base);
    std::ofstream(snapshot.state_path()) << "state";
    std::ofstream(snapshot.memory_path()) << "memory";
    absl::Status committed = catalog_->Commit(snapshot);
    EXPECT_TRUE(committed.ok()) << committed;
    return snapshot;
  }

  // The catalog a restarted emberd has.
  std::unique_ptr<SnapshotCatalog> Reloaded() {
    auto again = SnapshotCatalog::Create(dir_);
    EXPECT_TRUE(again.ok());
    (*again)->Load();
    return std::move(*again);
  }

  absl::Status Delete(const std::string& id, const std::vector<SnapshotUser>& users = {}) {
    absl::StatusOr<v1::Snapshot> taken = catalog_->Take(id, users);
    if (!taken.ok()) return taken.status();
    return catalog_->Remove(*taken);
  }

  ::ember::testing::ScopedTempDir temp_{"ember-snapshot-catalog-test"};
  const std::string dir_ = temp_.path();
  std::unique_ptr<SnapshotCatalog> catalog_;
};

TEST_F(SnapshotCatalogTest, TwoSnapshotsInOneMillisecondGetDistinctIds) {
  std::string first = catalog_->Reserve("vm", 1000);
  std::string second = catalog_->Reserve("vm", 1000);
  EXPECT_EQ(first, "vm-1000");
  EXPECT_EQ(second, "vm-1000-1");
}

TEST_F(SnapshotCatalogTest, AReservedSnapshotIsNeitherListedNorRestorableNorDeletable) {
  std::string id = catalog_->Reserve("vm", 1000);
  EXPECT_TRUE(catalog_->List("").empty());
  EXPECT_EQ(catalog_->Get(id).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Delete(id).code(), absl::StatusCode::kFailedPrecondition);
  catalog_->Unreserve(id);
  EXPECT_EQ(catalog_->Get(id).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SnapshotCatalogTest, DeleteRemovesTheFilesAndTheRecord) {
  v1::Snapshot snapshot = Finished("vm", 1000);
  ASSERT_TRUE(Delete(snapshot.snapshot_id()).ok());
  EXPECT_FALSE(std::filesystem::exists(catalog_->RecordDir(snapshot.snapshot_id())));
  EXPECT_EQ(catalog_->Get(snapshot.snapshot_id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Delete(snapshot.snapshot_id()).code(), absl::StatusCode::kNotFound);
}

TEST_F(SnapshotCatalogTest, DeleteIsRefusedWhileADiffAppliesOntoIt) {
  v1::Snapshot full = Finished("vm", 1000);
  v1::Snapshot diff = Finished("vm", 2000, full.snapshot_id());
  absl::Status refused = Delete(full.snapshot_id());
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.message().find(diff.snapshot_id()), std::string::npos) << refused;
  EXPECT_TRUE(std::filesystem::exists(full.memory_path()));
  ASSERT_TRUE(Delete(diff.snapshot_id()).ok());
  EXPECT_TRUE(Delete(full.snapshot_id()).ok());
}

TEST_F(SnapshotCatalogTest, DeleteIsRefusedWhileARestoreIsInProgress) {
  v1::Snapshot snapshot = Finished("vm", 1000);
  ASSERT_TRUE(catalog_->BeginRestore(snapshot.snapshot_id()).ok());
  EXPECT_EQ(Delete(snapshot.snapshot_id()).code(), absl::StatusCode::kFailedPrecondition);
  catalog_->EndRestore(snapshot.snapshot_id());
  EXPECT_TRUE(Delete(snapshot.snapshot_id()).ok());
}

TEST_F(SnapshotCatalogTest, DeleteIsRefusedWhileALiveCloneReadsItsMemoryButNotOnceStopped) {
  v1::Snapshot snapshot = Finished("vm", 1000);
  SnapshotUser clone{"clone-0", v1::Vm::RUNNING, snapshot.snapshot_id(), "", false};
  absl::Status refused = Delete(snapshot.snapshot_id(), {clone});
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.message().find("clone-0"), std::string::npos) << refused;
  // Restored by its state path, the same.
  clone.restored_from = snapshot.state_path();
  EXPECT_EQ(Delete(snapshot.snapshot_id(), {clone}).code(),
            absl::StatusCode::kFailedPrecondition);
  clone.state = v1::Vm::STOPPED;
  EXPECT_TRUE(Delete(snapshot.snapshot_id(), {clone}).ok());
}

TEST_F(SnapshotCatalogTest, DeleteIsRefusedOnlyForAVmThatWouldTakeADiffOntoIt) {
  v1::Snapshot snapshot = Finished("vm", 1000);
  SnapshotUser vm{"vm", v1::Vm::PAUSED, "", snapshot.snapshot_id(), true};
  EXPECT_EQ(Delete(snapshot.snapshot_id(), {vm}).code(), absl::StatusCode::kFailedPrecondition);
  vm.tracks_dirty_pages = false;  // it cannot take a DIFF snapshot at all
  EXPECT_TRUE(Delete(snapshot.snapshot_id(), {vm}).ok());
}

TEST_F(SnapshotCatalogTest, AFailedRemoveKeepsTheRecordForASecondDelete) {
  v1::Snapshot snapshot = Finished("vm", 1000);
  // A directory where the state file was: unlink fails (EISDIR), the record stays.
  ASSERT_EQ(::unlink(snapshot.state_path().c_str()), 0);
  std::filesystem::create_directories(snapshot.state_path() + "/x");
  EXPECT_EQ(Delete(snapshot.snapshot_id()).code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(catalog_->Get(snapshot.snapshot_id()).ok());
  std::filesystem::remove_all(snapshot.state_path());
  EXPECT_TRUE(Delete(snapshot.snapshot_id()).ok());
}

TEST_F(SnapshotCatalogTest, ADeleteCutShortLeavesNoRecordOfMissingFilesAndTheNextStartEndsIt) {
  v1::Snapshot snapshot = Finished("vm", 1000);
  // The state file goes, then the memory file cannot (a directory there): as if emberd had
  // been killed between the two.
  ASSERT_EQ(::unlink(snapshot.memory_path().c_str()), 0);
  std::filesystem::create_directories(snapshot.memory_path() + "/x");
  EXPECT_EQ(Delete(snapshot.snapshot_id()).code(), absl::StatusCode::kInternal);
  ASSERT_FALSE(std::filesystem::exists(snapshot.state_path()));
  // A restarted emberd keeps no record that names the state file that is gone.
  EXPECT_TRUE(Reloaded()->List("").empty());
  std::filesystem::remove_all(snapshot.memory_path());
  auto again = Reloaded();
  EXPECT_EQ(again->Get(snapshot.snapshot_id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(again->RecordDir(snapshot.snapshot_id())));
}

TEST_F(SnapshotCatalogTest, ARecordDirectoryBegunButNeverRecordedIsRemovedOnTheNextStart) {
  // emberd was killed inside Begin: the VM's config written, the pending record not yet.
  const std::string record = catalog_->RecordDir("vm-1000");
  std::filesystem::create_directories(record);
  std::ofstream(record + "/vm_config.json") << "{}";
  auto again = Reloaded();
  EXPECT_FALSE(std::filesystem::exists(record));
}

TEST_F(SnapshotCatalogTest, LoadFindsTheRecordsOfAPreviousEmberd) {
  v1::Snapshot snapshot = Finished("vm", 1000);
  auto again = Reloaded();
  absl::StatusOr<v1::Snapshot> found = again->Get(snapshot.snapshot_id());
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->memory_path(), snapshot.memory_path());
  EXPECT_EQ(again->FindByFiles(snapshot.state_path(), snapshot.memory_path()),
            snapshot.snapshot_id());
}

TEST_F(SnapshotCatalogTest, BeginRefusesADirectoryThatHoldsASnapshot) {
  const std::string mine = dir_ + "/mine";
  std::filesystem::create_directories(mine);
  std::ofstream(mine + "/memory") << "someone's memory";
  v1::Snapshot snapshot;
  snapshot.set_snapshot_id(catalog_->Reserve("vm", 1000));
  snapshot.set_state_path(mine + "/state");
  snapshot.set_memory_path(mine + "/memory");
  EXPECT_EQ(catalog_->Begin(snapshot, v1::VmConfig()).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ReadFile(mine + "/memory"), "someone's memory");
}

// A record that cannot be written (here: a directory where vm_config.json goes, as a full disk
// would fail it) undoes only what Begin made.
class SnapshotCatalogBeginFailsTest : public SnapshotCatalogTest {
 protected:
  absl::Status BeginInto(const std::string& dir) {
    v1::Snapshot snapshot;
    snapshot.set_snapshot_id(catalog_->Reserve("vm", 1000));
    snapshot.set_state_path(dir + "/state");
    snapshot.set_memory_path(dir + "/memory");
    std::filesystem::create_directories(catalog_->RecordDir(snapshot.snapshot_id()) +
                                        "/vm_config.json");
    return catalog_->Begin(snapshot, v1::VmConfig());
  }
};

TEST_F(SnapshotCatalogBeginFailsTest, ACallersEmptyDirectoryStays) {
  const std::string mine = dir_ + "/mine";
  std::filesystem::create_directories(mine);
  EXPECT_FALSE(BeginInto(mine).ok());
  EXPECT_TRUE(std::filesystem::is_directory(mine));
}

TEST_F(SnapshotCatalogBeginFailsTest, TheDirectoriesItMadeGo) {
  EXPECT_FALSE(BeginInto(dir_ + "/made/for/it").ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/made"));
}

TEST_F(SnapshotCatalogTest, APendingSnapshotWhoseFilesAreCompleteIsRecordedOnTheNextStart) {
  // emberd was killed after ember-vmm wrote both files, before it recorded them.
  v1::Snapshot snapshot = Begun("vm", 1000, "", dir_ + "/mine");
  std::ofstream(snapshot.state_path()) << "state";
  std::ofstream(snapshot.memory_path()) << "memory";
  auto again = Reloaded();
  absl::StatusOr<v1::Snapshot> found = again->Get(snapshot.snapshot_id());
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->state_path(), snapshot.state_path());
  const std::string record = again->RecordDir(snapshot.snapshot_id());
  EXPECT_TRUE(std::filesystem::exists(record + "/snapshot.json"));
  EXPECT_FALSE(std::filesystem::exists(record + "/pending.json"));
  // A record like any other: deletable, and a third start still has it until then.
  EXPECT_TRUE(Reloaded()->Get(snapshot.snapshot_id()).ok());
  absl::StatusOr<v1::Snapshot> taken = again->Take(snapshot.snapshot_id(), {});
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_TRUE(again->Remove(*taken).ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/mine"));
}

TEST_F(SnapshotCatalogTest, APendingSnapshotLeftUnfinishedIsRemovedWithItsTemporaryFiles) {
  // emberd and its VMM were killed while the memory file was being written.
  v1::Snapshot snapshot = Begun("vm", 1000, "", dir_ + "/mine");
  std::ofstream(snapshot.state_path()) << "state";
  std::ofstream(dir_ + "/mine/memory.tmp-123-0-0") << "half";
  auto again = Reloaded();
  EXPECT_EQ(again->Get(snapshot.snapshot_id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/mine"));
  EXPECT_FALSE(std::filesystem::exists(again->RecordDir(snapshot.snapshot_id())));
  // The directory takes a new snapshot.
  v1::Snapshot next = Begun("vm", 2000, "", dir_ + "/mine");
  EXPECT_TRUE(std::filesystem::exists(again->RecordDir(next.snapshot_id()) + "/pending.json"));
}

TEST_F(SnapshotCatalogTest, NextDiffBaseIsTheVmsLatestSnapshotElseTheOneItWasRestoredFrom) {
  v1::Snapshot old_vm = Finished("vm", 500);  // an earlier VM of the same id
  v1::Snapshot source = Finished("src", 600);
  EXPECT_EQ(catalog_->NextDiffBase("vm", 800, source.snapshot_id()), source.snapshot_id());
  EXPECT_EQ(catalog_->NextDiffBase("vm", 800, source.state_path()), source.snapshot_id());
  EXPECT_EQ(catalog_->NextDiffBase("vm", 800, ""), "");
  v1::Snapshot first = Finished("vm", 1000);
  v1::Snapshot second = Finished("vm", 1000);  // same millisecond: "vm-1000-1"
  EXPECT_EQ(catalog_->NextDiffBase("vm", 800, source.snapshot_id()), second.snapshot_id());
  EXPECT_EQ(catalog_->NextDiffBase("vm", 400, ""), second.snapshot_id());
  (void)old_vm;
  (void)first;
}

}  // namespace
}  // namespace ember::emberd
