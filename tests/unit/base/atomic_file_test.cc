#include "vmm/base/atomic_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "tests/support/files.h"

namespace ember::base {
namespace {

using ::ember::testing::ReadFile;

std::vector<std::string> Listing(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

class AtomicFileTest : public ::testing::Test {
 protected:
  ::ember::testing::ScopedTempDir temp_{"ember-atomic-file-test"};
  const std::string dir_ = temp_.path();
  const std::string path_ = dir_ + "/file";
};

TEST_F(AtomicFileTest, WriteReplacesTheContentsAndLeavesNothingElseBehind) {
  std::ofstream(path_) << "old contents, longer than the new";
  ASSERT_TRUE(WriteFileAtomically(path_, "new").ok());
  EXPECT_EQ(ReadFile(path_), "new");
  EXPECT_EQ(Listing(dir_), std::vector<std::string>{"file"});
}

TEST_F(AtomicFileTest, WriteGivesTheFileTheRequestedMode) {
  ASSERT_TRUE(WriteFileAtomically(path_, "x", 0640).ok());
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
}

TEST_F(AtomicFileTest, AMappingOfTheOldFileKeepsTheOldContents) {
  std::string old_contents(8192, 'o');
  ASSERT_TRUE(WriteFileAtomically(path_, old_contents).ok());
  int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  void* map = ::mmap(nullptr, old_contents.size(), PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  ASSERT_NE(map, MAP_FAILED);

  ASSERT_TRUE(WriteFileAtomically(path_, "n").ok());

  // Pages never touched before the rewrite: they still load from the old inode.
  EXPECT_EQ(std::string(static_cast<const char*>(map), old_contents.size()), old_contents);
  ::munmap(map, old_contents.size());
  EXPECT_EQ(ReadFile(path_), "n");
}

TEST_F(AtomicFileTest, AnotherWritersTemporaryFileIsLeftAlone) {
  std::ofstream(path_ + ".tmp") << "another writer's";
  ASSERT_TRUE(WriteFileAtomically(path_, "mine").ok());
  EXPECT_EQ(ReadFile(path_), "mine");
  EXPECT_EQ(ReadFile(path_ + ".tmp"), "another writer's");
}

TEST_F(AtomicFileTest, ItsTemporaryFileIsKnownByNameAndNoOtherIs) {
  auto file = AtomicFile::Create(path_);
  ASSERT_TRUE(file.ok()) << file.status();
  const std::string temp_name = std::filesystem::path(file->temp_path()).filename().string();
  EXPECT_TRUE(IsAtomicFileTemp(temp_name, "file")) << temp_name;
  EXPECT_FALSE(IsAtomicFileTemp(temp_name, "fil"));
  EXPECT_FALSE(IsAtomicFileTemp("file", "file"));
  EXPECT_FALSE(IsAtomicFileTemp("file.tmp", "file"));  // not an AtomicFile's name
}

TEST_F(AtomicFileTest, ConcurrentWritersOfOnePathLeaveOneWritersWholeContents) {
  constexpr int kWriters = 4;
  std::vector<std::string> contents;
  for (int i = 0; i < kWriters; ++i) contents.push_back(std::string(256 * 1024, char('a' + i)));
  std::vector<std::thread> writers;
  std::atomic<int> failures{0};
  for (int i = 0; i < kWriters; ++i) {
    writers.emplace_back([&, i] {
      for (int round = 0; round < 20; ++round) {
        if (!WriteFileAtomically(path_, contents[static_cast<std::size_t>(i)]).ok()) ++failures;
      }
    });
  }
  for (std::thread& writer : writers) writer.join();
  EXPECT_EQ(failures, 0);
  std::string result = ReadFile(path_);
  EXPECT_NE(std::find(contents.begin(), contents.end(), result), contents.end())
      << "a mix of writers, " << result.size() << " bytes";
  EXPECT_EQ(Listing(dir_), std::vector<std::string>{"file"});
}

TEST_F(AtomicFileTest, DroppedUncommittedLeavesTheTargetAndRemovesTheTemporaryFile) {
  std::ofstream(path_) << "kept";
  {
    auto file = AtomicFile::Create(path_);
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_TRUE(file->Append("discarded").ok());
  }
  EXPECT_EQ(ReadFile(path_), "kept");
  EXPECT_EQ(Listing(dir_), std::vector<std::string>{"file"});
}

TEST_F(AtomicFileTest, FailedRenameReportsItAndRemovesTheTemporaryFile) {
  std::filesystem::create_directories(path_ + "/occupied");  // a file cannot replace it
  absl::Status status = WriteFileAtomically(path_, "x");
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("rename"), std::string::npos) << status;
  EXPECT_EQ(Listing(dir_), std::vector<std::string>{"file"});
}

TEST_F(AtomicFileTest, MissingDirectoryIsAnErrorNamingTheFile) {
  absl::Status status = WriteFileAtomically(dir_ + "/absent/file", "x");
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find(dir_ + "/absent/file"), std::string::npos) << status;
}

}  // namespace
}  // namespace ember::base
