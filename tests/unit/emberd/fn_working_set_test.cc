#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "snapshot/working_set.h"
#include "tests/support/files.h"
#include "vmm/emberd/functions/working_set.h"

namespace ember::emberd::functions {
namespace {

constexpr std::uint64_t kMemory = 32ull << 20;  // 8192 pages

std::string Encoded(std::vector<snapshot::PageRun> runs, std::uint64_t memory = kMemory) {
  return snapshot::EncodeWorkingSet({memory, 0x1234, std::move(runs)});
}

TEST(FnWorkingSet, ASetTheVmmEncodesPasses) {
  EXPECT_TRUE(CheckWorkingSet(Encoded({{0, 3}, {10, 1}, {8000, 192}}), kMemory).ok());
  EXPECT_TRUE(CheckWorkingSet(Encoded({}), kMemory).ok());
  // The largest: every other page.
  std::vector<snapshot::PageRun> runs;
  for (std::uint64_t page = 0; page < kMemory / 4096; page += 2) runs.push_back({page, 1});
  const std::string largest = Encoded(runs);
  EXPECT_EQ(MaxWorkingSetBytes(kMemory), largest.size());
  EXPECT_TRUE(CheckWorkingSet(largest, kMemory).ok());
}

TEST(FnWorkingSet, SetsNoVmmRecordsAreRefused) {
  const std::string good = Encoded({{0, 3}, {10, 1}});
  std::string magic = good;
  magic[0] = 'X';
  std::string truncated = good.substr(0, good.size() - 1);
  std::string padded = good + std::string(16, '\0');
  std::string count = good;
  count[32] = 7;  // says 7 runs, holds 2
  const std::string cases[] = {
      magic,
      truncated,
      padded,
      count,
      "",
      Encoded({{0, 3}}, kMemory * 2),  // another guest's memory size
      Encoded({{10, 1}, {0, 3}}),      // out of order
      Encoded({{0, 3}, {2, 1}}),       // overlapping
      Encoded({{0, 3}, {3, 1}}),       // touching: the VMM's runs are maximal
      Encoded({{8190, 3}}),            // past the memory's end
      Encoded({{5, 0}}),               // empty
  };
  for (const std::string& bytes : cases) {
    EXPECT_EQ(absl::StatusCode::kInvalidArgument, CheckWorkingSet(bytes, kMemory).code())
        << bytes.size();
  }
  EXPECT_FALSE(
      CheckWorkingSet(good + std::string(MaxWorkingSetBytes(kMemory), '\0'), kMemory).ok());
}

// The jail's output directory as the clone's VMM left it.
class TakeRecordedWorkingSetTest : public ::testing::Test {
 protected:
  std::string Out() const { return dir_.path() + "/out"; }
  std::string To() const { return dir_.path() + "/memory.ws"; }
  void SetUp() override { ASSERT_EQ(0, ::mkdir(Out().c_str(), 0700)); }
  void Write(const std::string& bytes) {
    FILE* f = std::fopen((Out() + "/working-set").c_str(), "wb");
    ASSERT_NE(nullptr, f);
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
  }
  testing::ScopedTempDir dir_{"fn-working-set"};
};

TEST_F(TakeRecordedWorkingSetTest, AWellFormedSetIsPutInPlace) {
  const std::string set = Encoded({{0, 3}});
  Write(set);
  ASSERT_TRUE(TakeRecordedWorkingSet(Out(), kMemory, To()).ok());
  EXPECT_EQ(set, testing::ReadFile(To()));
  struct stat st {};
  ASSERT_EQ(0, ::stat(To().c_str(), &st));
  EXPECT_EQ(0600u, st.st_mode & 07777);
}

TEST_F(TakeRecordedWorkingSetTest, ABadSetLeavesNothing) {
  Write(Encoded({{0, 3}}, kMemory * 2));
  EXPECT_EQ(absl::StatusCode::kInvalidArgument,
            TakeRecordedWorkingSet(Out(), kMemory, To()).code());
  EXPECT_NE(0, ::access(To().c_str(), F_OK));
}

TEST_F(TakeRecordedWorkingSetTest, ASymlinkIsNotFollowed) {
  const std::string elsewhere = dir_.path() + "/elsewhere";
  {
    FILE* f = std::fopen(elsewhere.c_str(), "wb");
    const std::string set = Encoded({{0, 3}});
    std::fwrite(set.data(), 1, set.size(), f);
    std::fclose(f);
  }
  ASSERT_EQ(0, ::symlink(elsewhere.c_str(), (Out() + "/working-set").c_str()));
  EXPECT_FALSE(TakeRecordedWorkingSet(Out(), kMemory, To()).ok());
  EXPECT_NE(0, ::access(To().c_str(), F_OK));
}

TEST_F(TakeRecordedWorkingSetTest, NoneRecordedIsNotFound) {
  EXPECT_EQ(absl::StatusCode::kNotFound, TakeRecordedWorkingSet(Out(), kMemory, To()).code());
}

}  // namespace
}  // namespace ember::emberd::functions
