#include "virtio/block/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

namespace ember::virtio::block {
namespace {

class SharedFileTest : public ::testing::Test {
 protected:
  SharedFileTest() : path_(::testing::TempDir() + "/ember_shared_disk") {
    std::ofstream(path_) << std::string(512, 'x');
  }
  ~SharedFileTest() override { ::unlink(path_.c_str()); }
  BlockConfig Drive(const std::string& id, bool read_only) {
    BlockConfig config;
    config.drive_id = id;
    config.path = path_;
    config.read_only = read_only;
    return config;
  }
  std::string path_;
};

TEST_F(SharedFileTest, TwoReadOnlyDrivesMayShareAFile) {
  EXPECT_TRUE(CheckDrivesShareNoWritableFile({Drive("a", true), Drive("b", true)}).ok());
}

TEST_F(SharedFileTest, AWritableDriveMayNotShareItsFile) {
  EXPECT_FALSE(CheckDrivesShareNoWritableFile({Drive("a", true), Drive("b", false)}).ok());
}

TEST_F(SharedFileTest, MissingFileIsAnError) {
  BlockConfig missing = Drive("a", true);
  missing.path = "/nonexistent/ember";
  EXPECT_FALSE(CheckDrivesShareNoWritableFile({missing}).ok());
}

}  // namespace
}  // namespace ember::virtio::block
