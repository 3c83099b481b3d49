#include "virtio/block/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

namespace ember::virtio::block {
namespace {

TEST(ParseDriveToken, MinimalTokenTakesDefaults) {
  auto config = ParseDriveToken("id=rootfs,path=/img/root.ext4");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->drive_id, "rootfs");
  EXPECT_EQ(config->path, "/img/root.ext4");
  EXPECT_FALSE(config->read_only);
  EXPECT_EQ(config->engine, EngineKind::kIoUring);
  EXPECT_EQ(config->cache, CacheMode::kUnsafe);
  EXPECT_FALSE(config->direct_io);
  EXPECT_FALSE(config->rate_limiter.bandwidth.enabled());
}

TEST(ParseDriveToken, EveryOptionIsRead) {
  auto config = ParseDriveToken(
      "id=d,path=/x,ro=on,engine=sync,cache=writeback,direct=on,bw_size=1000,bw_burst=5,"
      "bw_refill_ms=100,ops_size=10,ops_burst=2,ops_refill_ms=50");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->read_only);
  EXPECT_EQ(config->engine, EngineKind::kSync);
  EXPECT_EQ(config->cache, CacheMode::kWriteback);
  EXPECT_TRUE(config->direct_io);
  EXPECT_EQ(config->rate_limiter.bandwidth.size, 1000u);
  EXPECT_EQ(config->rate_limiter.bandwidth.one_time_burst, 5u);
  EXPECT_EQ(config->rate_limiter.bandwidth.refill_time_ms, 100u);
  EXPECT_EQ(config->rate_limiter.ops.size, 10u);
  EXPECT_EQ(config->rate_limiter.ops.one_time_burst, 2u);
  EXPECT_EQ(config->rate_limiter.ops.refill_time_ms, 50u);
}

TEST(ParseDriveToken, UnknownKeyIsAnError) {
  EXPECT_FALSE(ParseDriveToken("id=d,path=/x,colour=blue").ok());
}

TEST(ParseDriveToken, UnknownEngineIsAnError) {
  EXPECT_FALSE(ParseDriveToken("id=d,path=/x,engine=aio").ok());
}

TEST(ParseDriveToken, BadNumberIsAnError) {
  EXPECT_FALSE(ParseDriveToken("id=d,path=/x,bw_size=lots").ok());
}

TEST(ParseDriveToken, MissingPathIsAnError) {
  EXPECT_FALSE(ParseDriveToken("id=d,ro=on").ok());
}

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
