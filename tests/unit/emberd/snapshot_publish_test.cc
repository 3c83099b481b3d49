#include "vmm/emberd/snapshot_publish.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "tests/support/files.h"
#include "vmm/base/unique_fd.h"

namespace ember::emberd {
namespace {

constexpr std::size_t kPage = 4096;

// The test plays the compromised jailed ember-vmm: it writes a snapshot file, keeps a writable
// fd and a MAP_SHARED mapping of it, and writes through both once emberd has published it.
class SnapshotPublishTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Three pages: 'A', a hole, 'C'.
    vmm_fd_.Reset(::open(from_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    ASSERT_TRUE(vmm_fd_.Valid());
    ASSERT_EQ(0, ::ftruncate(vmm_fd_.Get(), 3 * kPage));
    ASSERT_EQ(static_cast<ssize_t>(kPage), ::pwrite(vmm_fd_.Get(), Page('A').data(), kPage, 0));
    ASSERT_EQ(static_cast<ssize_t>(kPage),
              ::pwrite(vmm_fd_.Get(), Page('C').data(), kPage, 2 * kPage));
    shared_ = ::mmap(nullptr, 3 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, vmm_fd_.Get(), 0);
    ASSERT_NE(MAP_FAILED, shared_);
  }
  void TearDown() override {
    if (shared_ != MAP_FAILED) ::munmap(shared_, 3 * kPage);
  }

  static std::string Page(char c) { return std::string(kPage, c); }

  // The published file's bytes as a clone sees them: mapped MAP_PRIVATE.
  std::string ClonesView() const {
    base::UniqueFd fd(::open(to_.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return "cannot open";
    void* map = ::mmap(nullptr, 3 * kPage, PROT_READ, MAP_PRIVATE, fd.Get(), 0);
    if (map == MAP_FAILED) return "cannot map";
    std::string bytes(static_cast<const char*>(map), 3 * kPage);
    ::munmap(map, 3 * kPage);
    return bytes;
  }

  absl::Status Publish() {
    return PublishSnapshotFile(from_, ::getuid(), to_, {::getuid(), ::getgid(), false});
  }

  ::ember::testing::ScopedTempDir temp_{"ember-snapshot-publish-test"};
  const std::string from_ = temp_.path() + "/vm.mem";
  const std::string to_ = temp_.path() + "/memory";
  base::UniqueFd vmm_fd_;
  void* shared_ = MAP_FAILED;
};

TEST_F(SnapshotPublishTest, WritesThroughAKeptFdAfterPublishingDoNotReachClones) {
  ASSERT_TRUE(Publish().ok()) << Publish();
  const std::string published = Page('A') + std::string(kPage, '\0') + Page('C');
  ASSERT_EQ(published, ClonesView());
  ASSERT_EQ(static_cast<ssize_t>(kPage), ::pwrite(vmm_fd_.Get(), Page('X').data(), kPage, 0));
  ASSERT_EQ(static_cast<ssize_t>(kPage), ::pwrite(vmm_fd_.Get(), Page('Y').data(), kPage, kPage));
  EXPECT_EQ(published, ClonesView());
}

TEST_F(SnapshotPublishTest, WritesThroughAKeptSharedMappingAfterPublishingDoNotReachClones) {
  ASSERT_TRUE(Publish().ok()) << Publish();
  static_cast<char*>(shared_)[2 * kPage] = 'Z';
  ASSERT_EQ(0, ::msync(shared_, 3 * kPage, MS_SYNC));
  EXPECT_EQ(Page('A') + std::string(kPage, '\0') + Page('C'), ClonesView());
}

TEST_F(SnapshotPublishTest, PublishedFileIsReadOnlyKeepsItsHolesAndTheVmmsNameIsGone) {
  ASSERT_TRUE(Publish().ok()) << Publish();
  struct stat st {};
  ASSERT_EQ(0, ::stat(to_.c_str(), &st));
  EXPECT_EQ(0440u, st.st_mode & 07777);
  EXPECT_EQ(static_cast<off_t>(3 * kPage), st.st_size);
  base::UniqueFd fd(::open(to_.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_EQ(static_cast<off_t>(2 * kPage), ::lseek(fd.Get(), kPage, SEEK_DATA));
  EXPECT_NE(0, ::access(from_.c_str(), F_OK));
}

TEST_F(SnapshotPublishTest, FileWithASecondLinkIsRefused) {
  ASSERT_EQ(0, ::link(from_.c_str(), (temp_.path() + "/other").c_str()));
  absl::Status status = Publish();
  EXPECT_EQ(absl::StatusCode::kInternal, status.code()) << status;
  EXPECT_NE(0, ::access(to_.c_str(), F_OK));
}

TEST_F(SnapshotPublishTest, SymlinkIsRefused) {
  const std::string link = temp_.path() + "/link";
  ASSERT_EQ(0, ::symlink(from_.c_str(), link.c_str()));
  EXPECT_FALSE(PublishSnapshotFile(link, ::getuid(), to_, {::getuid(), ::getgid(), false}).ok());
  EXPECT_NE(0, ::access(to_.c_str(), F_OK));
}

TEST_F(SnapshotPublishTest, FileOfAnotherUidIsRefused) {
  absl::Status status =
      PublishSnapshotFile(from_, ::getuid() + 1, to_, {::getuid(), ::getgid(), false});
  EXPECT_EQ(absl::StatusCode::kInternal, status.code()) << status;
}

}  // namespace
}  // namespace ember::emberd
