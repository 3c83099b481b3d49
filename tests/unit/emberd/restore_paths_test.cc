#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/support/files.h"
#include "vmm/base/path_rules.h"
#include "vmm/emberd/api_service.h"
#include "vmm/emberd/restore_plan.h"

namespace ember::emberd {
namespace {

// emberd's rules over <temp>/allowed, holding a snapshot's state file; <temp>/outside is not
// allowed.
class RestorePathsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(allowed_ + "/snap");
    std::filesystem::create_directories(outside_);
    std::ofstream(state_) << "state";
    std::ofstream(outside_ + "/memory") << "someone else's memory";
    auto rules = base::PathRules::Open({allowed_});
    ASSERT_TRUE(rules.ok()) << rules.status();
    rules_ = std::move(*rules);
    request_.set_state_path(state_);
  }

  ::ember::testing::ScopedTempDir temp_{"ember-restore-paths-test"};
  const std::string allowed_ = temp_.path() + "/allowed";
  const std::string outside_ = temp_.path() + "/outside";
  const std::string state_ = allowed_ + "/snap/state";
  base::PathRules rules_;
  v1::RestoreRequest request_;
};

TEST_F(RestorePathsTest, ImpliedMemoryFileBesideTheStateFilePasses) {
  std::ofstream(allowed_ + "/snap/memory") << "memory";
  EXPECT_TRUE(CheckRestorePaths(rules_, request_).ok());
  EXPECT_EQ(RequestedMemoryPath(request_), allowed_ + "/snap/memory");
}

TEST_F(RestorePathsTest, ImpliedMemorySymlinkLeadingOutIsRefused) {
  ASSERT_EQ(::symlink((outside_ + "/memory").c_str(), (allowed_ + "/snap/memory").c_str()), 0);
  absl::Status status = CheckRestorePaths(rules_, request_);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("memory_path"), std::string::npos) << status;
  EXPECT_NE(status.message().find("beside state_path"), std::string::npos) << status;
}

TEST_F(RestorePathsTest, ImpliedMemorySymlinkClimbingOutIsRefused) {
  ASSERT_EQ(::symlink("../../outside/memory", (allowed_ + "/snap/memory").c_str()), 0);
  absl::Status status = CheckRestorePaths(rules_, request_);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

TEST_F(RestorePathsTest, ExplicitMemoryPathOutsideIsRefused) {
  request_.set_memory_path(outside_ + "/memory");
  absl::Status status = CheckRestorePaths(rules_, request_);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(RequestedMemoryPath(request_), outside_ + "/memory");
}

}  // namespace
}  // namespace ember::emberd
