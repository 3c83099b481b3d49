#include "vmm/base/logging.h"

#include <fcntl.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

#include "tests/support/files.h"

namespace ember::base {
namespace {

// Logs go to a file of the test's own; the process-wide settings are put back afterwards.
class LoggingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = ::testing::TempDir() + "/ember_log_XXXXXX";
    int fd = ::mkstemp(path_.data());
    ASSERT_GE(fd, 0);
    ::close(fd);
    ASSERT_TRUE(SetLogFile(path_).ok());
  }
  void TearDown() override {
    SetLogDecorations(true, true);
    ASSERT_TRUE(SetLogFile("/dev/stderr").ok());
    ::unlink(path_.c_str());
  }
  std::string Logged() const { return ::ember::testing::ReadFile(path_); }

  std::string path_;
};

TEST_F(LoggingTest, LinesNameTheirLevelAndOriginByDefault) {
  EMBER_LOG(kWarn) << "disk almost full";
  const std::string line = Logged();
  EXPECT_NE(line.find(" WARN tests/unit/base/logging_test.cc:"), std::string::npos) << line;
  EXPECT_NE(line.find("] disk almost full\n"), std::string::npos) << line;
}

TEST_F(LoggingTest, LevelAndOriginCanBeLeftOut) {
  SetLogDecorations(/*show_level=*/false, /*show_origin=*/false);
  EMBER_LOG(kWarn) << "disk almost full";
  const std::string line = Logged();
  EXPECT_EQ(line.find("WARN"), std::string::npos) << line;
  EXPECT_EQ(line.find("logging_test.cc"), std::string::npos) << line;
  EXPECT_NE(line.find(" [main] disk almost full\n"), std::string::npos) << line;
}

TEST_F(LoggingTest, LevelWithoutOrigin) {
  SetLogDecorations(/*show_level=*/true, /*show_origin=*/false);
  EMBER_LOG(kError) << "boom";
  const std::string line = Logged();
  EXPECT_NE(line.find(" [main] ERROR boom\n"), std::string::npos) << line;
}

}  // namespace
}  // namespace ember::base
