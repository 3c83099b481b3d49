#include "perf/bench_options.h"

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace ember::perf {
namespace {

constexpr char kUsage[] = "usage: test-bench --dir DIR [--runs N] [--seconds S] [--verbose]\n";

struct Options {
  std::string dir;
  int runs = 5;
  std::uint64_t size = 256;
  double seconds = 0.4;
  bool verbose = false;
};

// Parses `args` (after the program name) as a harness with every kind of option would.
Options Parse(std::vector<std::string> args) {
  std::vector<char*> argv{const_cast<char*>("test-bench")};
  for (std::string& arg : args) argv.push_back(arg.data());
  Options options;
  BenchOptions("test-bench", kUsage)
      .Text("--dir", &options.dir, /*required=*/true)
      .Number("--runs", &options.runs, 1)
      .Number("--size", &options.size, std::uint64_t{16})
      .Number("--seconds", &options.seconds, kMinSampleSeconds)
      .Flag("--verbose", &options.verbose)
      .Parse(static_cast<int>(argv.size()), argv.data());
  return options;
}

TEST(BenchOptions, SetsEveryBoundFieldAndKeepsTheDefaultsOfTheOthers) {
  Options options = Parse({"--dir", "/d", "--runs", "7", "--seconds", "0.25", "--verbose"});
  EXPECT_EQ(options.dir, "/d");
  EXPECT_EQ(options.runs, 7);
  EXPECT_EQ(options.size, 256u);
  EXPECT_DOUBLE_EQ(options.seconds, 0.25);
  EXPECT_TRUE(options.verbose);
}

TEST(BenchOptions, HelpPrintsTheUsageAndExitsZero) {
  EXPECT_EXIT(Parse({"--help"}), testing::ExitedWithCode(0), "");
}

TEST(BenchOptions, AMissingRequiredOptionEndsTheHarness) {
  EXPECT_EXIT(Parse({"--runs", "3"}), testing::ExitedWithCode(1),
              "test-bench: error: --dir is required");
}

TEST(BenchOptions, AnUnknownOptionEndsTheHarnessWithTheUsage) {
  EXPECT_EXIT(Parse({"--dir", "/d", "--fast"}), testing::ExitedWithCode(1),
              "unknown argument --fast\nusage: test-bench");
}

TEST(BenchOptions, AnOptionWithoutItsValueEndsTheHarness) {
  EXPECT_EXIT(Parse({"--dir", "/d", "--runs"}), testing::ExitedWithCode(1),
              "--runs needs a value");
}

TEST(BenchOptions, MalformedOrTooSmallNumbersAreRefusedNamingTheOption) {
  EXPECT_EXIT(Parse({"--dir", "/d", "--runs", "lots"}), testing::ExitedWithCode(1),
              "--runs: \"lots\" is not a number >= 1");
  EXPECT_EXIT(Parse({"--dir", "/d", "--runs", "3x"}), testing::ExitedWithCode(1),
              "--runs: \"3x\" is not a number >= 1");
  EXPECT_EXIT(Parse({"--dir", "/d", "--size", "8"}), testing::ExitedWithCode(1),
              "--size: \"8\" is not a number >= 16");
  EXPECT_EXIT(Parse({"--dir", "/d", "--seconds", "0"}), testing::ExitedWithCode(1),
              "--seconds: \"0\" is not a number >= 0.01");
}

}  // namespace
}  // namespace ember::perf
