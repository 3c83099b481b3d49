#include "vmm/emberd/snapshot_mac.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "snapshot/memory_file.h"
#include "snapshot/snapshot_id.h"
#include "tests/support/files.h"
#include "vmm/base/unique_fd.h"

namespace ember::emberd {
namespace {

class SnapshotMacTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(state_) << "a state file's bytes";
    WriteMemory(4096, id_);
  }

  void WriteMemory(std::uint64_t memory_size, const std::string& id) {
    std::ofstream out(memory_, std::ios::trunc | std::ios::binary);
    out << std::string(memory_size, 'm') << snapshot::EncodeMemoryTrailer(memory_size, id);
  }

  void FlipByte(const std::string& path, std::streamoff offset) {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(offset);
    char byte = 0;
    file.get(byte);
    file.seekp(offset);
    file.put(static_cast<char>(byte ^ 1));
  }

  absl::Status Verify() const { return mac_.Verify("snapshot_id", "vm-1", state_, memory_, dir_); }

  ::ember::testing::ScopedTempDir temp_{"ember-snapshot-mac-test"};
  const std::string dir_ = temp_.path();
  const std::string state_ = dir_ + "/state";
  const std::string memory_ = dir_ + "/memory";
  const std::string id_ = snapshot::NewSnapshotId();
  const SnapshotMac mac_{std::string(kSnapshotKeySize, 'k')};
};

TEST_F(SnapshotMacTest, TrailerSizeIsTheMemoryFiles) {
  EXPECT_EQ(kMemoryTrailerBytes, snapshot::kMemoryTrailerSize);
}

TEST_F(SnapshotMacTest, UnchangedFilesVerify) {
  ASSERT_TRUE(mac_.Record("vm-1", state_, memory_, dir_).ok());
  EXPECT_TRUE(Verify().ok()) << Verify();
}

TEST_F(SnapshotMacTest, OneChangedByteOfTheStateFileIsRefusedNamingIt) {
  ASSERT_TRUE(mac_.Record("vm-1", state_, memory_, dir_).ok());
  FlipByte(state_, 3);
  absl::Status status = Verify();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("state file " + state_), std::string::npos) << status;
}

TEST_F(SnapshotMacTest, AnotherSnapshotIdInTheMemoryFileIsRefusedNamingIt) {
  ASSERT_TRUE(mac_.Record("vm-1", state_, memory_, dir_).ok());
  WriteMemory(4096, snapshot::NewSnapshotId());
  absl::Status status = Verify();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("memory file " + memory_), std::string::npos) << status;
}

TEST_F(SnapshotMacTest, AnotherMemorySizeIsRefused) {
  ASSERT_TRUE(mac_.Record("vm-1", state_, memory_, dir_).ok());
  WriteMemory(8192, id_);
  EXPECT_EQ(Verify().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SnapshotMacTest, ChangedGuestMemoryIsNotTheMacsBusiness) {
  // Guest data is not hashed: restore must not read GiBs.
  ASSERT_TRUE(mac_.Record("vm-1", state_, memory_, dir_).ok());
  FlipByte(memory_, 100);
  EXPECT_TRUE(Verify().ok()) << Verify();
}

TEST_F(SnapshotMacTest, FilesOfAnotherSnapshotIdAreRefused) {
  ASSERT_TRUE(mac_.Record("vm-2", state_, memory_, dir_).ok());
  EXPECT_EQ(Verify().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SnapshotMacTest, AnotherKeysMacIsRefused) {
  ASSERT_TRUE(SnapshotMac(std::string(kSnapshotKeySize, 'x')).Record("vm-1", state_, memory_,
                                                                     dir_).ok());
  EXPECT_EQ(Verify().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SnapshotMacTest, NoRecordedMacIsRefused) {
  absl::Status status = Verify();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("no MAC"), std::string::npos) << status;
}

TEST_F(SnapshotMacTest, NoRecordedMacNamesTheTrustCommand) {
  absl::Status status = Verify();
  EXPECT_NE(status.message().find("emberctl trust-snapshot vm-1"), std::string::npos) << status;
}

TEST_F(SnapshotMacTest, SealingASnapshotWithoutAMacMakesItVerify) {
  ASSERT_TRUE(mac_.Seal("snapshot_id", "vm-1", state_, memory_, dir_).ok());
  EXPECT_TRUE(Verify().ok()) << Verify();
  // Sealing it again changes nothing.
  EXPECT_TRUE(mac_.Seal("snapshot_id", "vm-1", state_, memory_, dir_).ok());
  EXPECT_TRUE(Verify().ok()) << Verify();
}

TEST_F(SnapshotMacTest, SealingASnapshotChangedAfterItWasSealedIsRefused) {
  ASSERT_TRUE(mac_.Record("vm-1", state_, memory_, dir_).ok());
  FlipByte(state_, 3);
  absl::Status status = mac_.Seal("snapshot_id", "vm-1", state_, memory_, dir_);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("state file " + state_), std::string::npos) << status;
  EXPECT_NE(status.message().find("seals only a snapshot that has no MAC"), std::string::npos)
      << status;
  EXPECT_FALSE(Verify().ok());  // still refused
}

TEST_F(SnapshotMacTest, AFifoAsStateFileIsRefusedWithoutBlocking) {
  ASSERT_TRUE(mac_.Record("vm-1", state_, memory_, dir_).ok());
  ASSERT_EQ(::unlink(state_.c_str()), 0);
  ASSERT_EQ(::mkfifo(state_.c_str(), 0600), 0);
  EXPECT_EQ(Verify().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SnapshotMacTest, KeyIsCreatedMode0600AndLoadedAgain) {
  const std::string key = dir_ + "/" + kSnapshotKeyFile;
  ASSERT_TRUE(SnapshotMac::LoadOrCreateKey(dir_).ok());
  struct stat st {};
  ASSERT_EQ(::stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_size, static_cast<off_t>(kSnapshotKeySize));
  // The same key after a restart: what the first made still verifies.
  auto first = SnapshotMac::LoadOrCreateKey(dir_);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(first->Record("vm-1", state_, memory_, dir_).ok());
  auto second = SnapshotMac::LoadOrCreateKey(dir_);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->Verify("snapshot_id", "vm-1", state_, memory_, dir_).ok());
}

TEST_F(SnapshotMacTest, KeyReadableByOthersIsRefused) {
  const std::string key = dir_ + "/" + kSnapshotKeyFile;
  ASSERT_TRUE(SnapshotMac::LoadOrCreateKey(dir_).ok());
  ASSERT_EQ(::chmod(key.c_str(), 0644), 0);
  auto loaded = SnapshotMac::LoadOrCreateKey(dir_);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(loaded.status().message().find("mode 0644"), std::string::npos) << loaded.status();
}

TEST_F(SnapshotMacTest, KeyThatIsADirectoryIsRefused) {
  ASSERT_EQ(::mkdir((dir_ + "/" + kSnapshotKeyFile).c_str(), 0700), 0);
  auto loaded = SnapshotMac::LoadOrCreateKey(dir_);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(loaded.status().message().find("not a regular file"), std::string::npos)
      << loaded.status();
}

TEST_F(SnapshotMacTest, KeyThatIsASymlinkIsRefused) {
  std::ofstream(dir_ + "/elsewhere") << std::string(kSnapshotKeySize, 'k');
  ASSERT_EQ(::chmod((dir_ + "/elsewhere").c_str(), 0600), 0);
  ASSERT_EQ(::symlink("elsewhere", (dir_ + "/" + kSnapshotKeyFile).c_str()), 0);
  EXPECT_EQ(SnapshotMac::LoadOrCreateKey(dir_).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(SnapshotMacTest, VerifyOfOpenFilesChecksThoseFilesNotWhatTheirNamesLeadToLater) {
  ASSERT_TRUE(mac_.Record("vm-1", state_, memory_, dir_).ok());
  base::UniqueFd state(::open(state_.c_str(), O_RDONLY | O_CLOEXEC));
  base::UniqueFd memory(::open(memory_.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(state.Valid() && memory.Valid());
  // Read once already (the fd's offset moved): Verify reads from the start regardless.
  char byte = 0;
  ASSERT_EQ(::read(state.Get(), &byte, 1), 1);
  // A changed state file put in place under the same name after the files were opened.
  std::ofstream(dir_ + "/changed") << "a changed state file";
  ASSERT_EQ(::rename((dir_ + "/changed").c_str(), state_.c_str()), 0);
  EXPECT_TRUE(mac_.Verify("snapshot_id", "vm-1", {state.Get(), state_}, {memory.Get(), memory_},
                          dir_)
                  .ok());
  EXPECT_EQ(Verify().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace ember::emberd
