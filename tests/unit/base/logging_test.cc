#include "vmm/base/logging.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <limits>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "tests/support/files.h"
#include "vmm/base/metrics.h"

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
    SetLogSizeLimit(std::numeric_limits<std::uint64_t>::max());
    SetLogRateLimit(false);
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

std::uint64_t LoggerMetric(const std::string& name) {
  return MetricsRegistry::Global().Get("logger", name)->Get();
}

std::size_t CountLines(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

TEST_F(LoggingTest, LineRepeatedFromOneSiteIsRateLimitedAndCounted) {
  SetLogRateLimit(true);
  const std::uint64_t before = LoggerMetric("rate_limited_lines");
  for (int i = 0; i < 25; ++i) EMBER_LOG(kWarn) << "refused feature set " << i;
  EXPECT_EQ(CountLines(Logged(), "refused feature set"),
            static_cast<std::size_t>(LogSiteLimit::kLogBurst));
  EXPECT_EQ(LoggerMetric("rate_limited_lines") - before, 25u - LogSiteLimit::kLogBurst);
}

TEST_F(LoggingTest, FirstLineAfterTheLimitSaysHowManyWereDropped) {
  SetLogRateLimit(true);
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < LogSiteLimit::kLogBurst + 3; ++j) {
      EMBER_LOG(kWarn) << "driver error 0x" << std::hex << 26;
    }
    if (i == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  }
  const std::string logged = Logged();
  EXPECT_NE(logged.find("driver error 0x1a [3 more lines from here were dropped by the log rate "
                        "limit]\n"),
            std::string::npos)
      << logged;
}

TEST(LogSiteLimit, BurstThenOneLinePerInterval) {
  LogSiteLimit limit;
  constexpr std::int64_t kStart = 1'000'000'000'000;
  for (int i = 0; i < LogSiteLimit::kLogBurst; ++i) EXPECT_TRUE(limit.AdmitAt(kStart)) << i;
  EXPECT_FALSE(limit.AdmitAt(kStart));
  EXPECT_FALSE(limit.AdmitAt(kStart + LogSiteLimit::kLogIntervalNs - 1));
  EXPECT_TRUE(limit.AdmitAt(kStart + LogSiteLimit::kLogIntervalNs));
  EXPECT_FALSE(limit.AdmitAt(kStart + LogSiteLimit::kLogIntervalNs));
  EXPECT_EQ(limit.TakeDropped(), 3u);
  EXPECT_EQ(limit.TakeDropped(), 0u);
  // A quiet site gets its whole burst back.
  const std::int64_t later = kStart + 100 * LogSiteLimit::kLogIntervalNs;
  for (int i = 0; i < LogSiteLimit::kLogBurst; ++i) EXPECT_TRUE(limit.AdmitAt(later)) << i;
}

TEST_F(LoggingTest, LogStopsAtItsSizeCapWithOneNotice) {
  SetLogSizeLimit(1000);
  const std::uint64_t lines_before = LoggerMetric("lines_over_cap");
  const std::string long_text(150, 'x');
  for (int i = 0; i < 8; ++i) EMBER_LOG(kWarn) << "line " << i << " " << long_text;
  EMBER_LOG(kError) << "after the cap";

  const std::string logged = Logged();
  EXPECT_LE(logged.size(), 1000u);
  EXPECT_EQ(CountLines(logged, "reached its size cap of 1000 bytes"), 1u) << logged;
  EXPECT_EQ(logged.find("after the cap"), std::string::npos);
  EXPECT_GE(LoggerMetric("lines_over_cap") - lines_before, 5u);
}

TEST_F(LoggingTest, WithoutTheRateLimitEveryLineIsWritten) {
  for (int i = 0; i < 25; ++i) EMBER_LOG(kInfo) << "VM created " << i;
  EXPECT_EQ(CountLines(Logged(), "VM created"), 25u);
}

TEST_F(LoggingTest, WhatTheLogFileAlreadyHoldsCountsTowardsTheCap) {
  const std::string earlier(700, 'e');
  std::ofstream(path_, std::ios::binary) << earlier;
  ASSERT_TRUE(SetLogFile(path_).ok());
  SetLogSizeLimit(1000);

  EMBER_LOG(kWarn) << std::string(200, 'x');

  const std::string logged = Logged();
  EXPECT_LE(logged.size(), 1000u);
  EXPECT_EQ(logged.substr(0, earlier.size()), earlier);
  EXPECT_EQ(logged.find("xxxx"), std::string::npos);
  EXPECT_NE(logged.find("reached its size cap"), std::string::npos) << logged;
}

}  // namespace
}  // namespace ember::base
