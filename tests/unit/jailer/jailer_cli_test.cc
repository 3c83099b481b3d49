// Runs the ember-jailer binary with refused command lines: each must exit 2 with exactly one
// line on stderr, before touching anything. Needs no root, since refusal comes first.
#include <ftw.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "tests/unit/jailer/jailer_process.h"

namespace ember::jailer {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

Result RunJailer(const std::vector<std::string>& args) {
  Jailer jailer(args, {});
  Result result;
  result.exit_code = jailer.Wait();
  result.out = jailer.out();
  result.err = jailer.err();
  return result;
}

struct RefusedCase {
  const char* name;
  std::vector<std::string> args;  // appended to a valid command line
  std::string expected;           // substring of the one stderr line
};

class JailerRefuses : public ::testing::TestWithParam<RefusedCase> {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/ember-jailer-cli-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    base_ = dir;
  }
  void TearDown() override { nftw(base_.c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS); }

  // Everything valid except what the case changes; the exec file exists.
  std::vector<std::string> CommandLine(const std::vector<std::string>& extra) {
    std::vector<std::string> argv;
    auto given = [&](const std::string& flag) {
      for (const auto& a : extra) {
        if (a == flag || a.rfind(flag + "=", 0) == 0) return true;
      }
      return false;
    };
    if (!given("--chroot-base-dir")) argv.insert(argv.end(), {"--chroot-base-dir", base_});
    if (!given("--id") && !given("--no-id")) argv.insert(argv.end(), {"--id", "vm-1"});
    if (!given("--exec-file") && !given("--no-exec-file")) {
      argv.insert(argv.end(), {"--exec-file", EMBER_BIN_DIR "/ember-jailer"});
    }
    if (!given("--uid") && !given("--no-uid")) argv.insert(argv.end(), {"--uid", "4321"});
    if (!given("--gid")) argv.insert(argv.end(), {"--gid", "4321"});
    for (const auto& a : extra) {
      if (a.rfind("--no-", 0) != 0) argv.push_back(a);
    }
    return argv;
  }

  std::string base_;
};

TEST_P(JailerRefuses, WithExitCodeTwoAndOneLineNamingTheProblem) {
  Result result = RunJailer(CommandLine(GetParam().args));
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_THAT(result.err, StartsWith("ember-jailer: "));
  EXPECT_THAT(result.err, HasSubstr(GetParam().expected));
  ASSERT_FALSE(result.err.empty());
  EXPECT_EQ(result.err.find('\n'), result.err.size() - 1) << "more than one line: " << result.err;
  EXPECT_TRUE(result.out.empty()) << result.out;
  // Refusal comes before any side effect: the chroot base is still empty.
  EXPECT_EQ(rmdir(base_.c_str()), 0) << "jailer left something in " << base_;
  mkdir(base_.c_str(), 0700);
}

const RefusedCase kRefused[] = {
    {"UnknownFlag", {"--frobnicate"}, "--frobnicate: unknown flag"},
    {"StrayArgument", {"vm.json"}, "VMM arguments go after"},
    {"IdBadCharacters", {"--id", "../../etc"}, "only letters, digits and dashes"},
    {"IdSlash", {"--id", "a/b"}, "only letters, digits and dashes"},
    {"IdTooLong", {"--id", std::string(65, 'x')}, "at most 64"},
    {"IdEmpty", {"--id", ""}, "--id: empty id"},
    {"ExecFileDotDot", {"--exec-file", "/usr/../bin/true"}, "contains \"..\""},
    {"ExecFileMissing", {"--exec-file", "/nonexistent/ember-vmm"}, "does not exist"},
    {"ExecFileDirectory", {"--exec-file", "/usr/bin"}, "not a regular file"},
    {"ExecFileNotExecutable",
     {"--exec-file", EMBER_SOURCE_DIR "/CMakeLists.txt"},
     "not executable"},
    {"ChrootBaseDotDot", {"--chroot-base-dir", "/tmp/../etc"}, "contains \"..\""},
    {"ChrootBaseRelative", {"--chroot-base-dir", "tmp"}, "not absolute"},
    {"NetnsDotDot", {"--netns", "/run/netns/../../proc/1/ns/net"}, "contains \"..\""},
    {"ParentCgroupDotDot",
     {"--cgroup", "pids.max=2", "--parent-cgroup", "../.."},
     "contains \"..\""},
    {"UidZero", {"--uid", "0"}, "--uid: 0 (root) is refused unless --allow-root"},
    {"GidZero", {"--gid", "0"}, "--gid: 0 (root) is refused unless --allow-root"},
    {"UidNegative", {"--uid", "-5"}, "not a decimal number"},
    {"UidTrailingJunk", {"--uid", "12ab"}, "not a decimal number"},
    {"UidOverflow", {"--uid", "4294967296"}, "out of range"},
    {"GidNotNumber", {"--gid", "wheel"}, "not a decimal number"},
    {"PassFdNotNumber", {"--pass-fd", "three"}, "not a decimal number"},
    {"PassFdStdio", {"--pass-fd", "1"}, "3 or more"},
    {"PassFdNotOpen", {"--pass-fd", "987"}, "not an open file descriptor"},
    {"ResourceLimitUnknown", {"--resource-limit", "core=0"}, "fsize=N, no-file=N or nproc=N"},
    {"ResourceLimitNotNumber", {"--resource-limit", "fsize=big"}, "not a decimal number"},
    {"CgroupVersionThree", {"--cgroup-version", "3"}, "not 1 or 2"},
    {"CgroupNotKeyValue", {"--cgroup", "pids.max"}, "not FILE=VALUE"},
    {"CgroupFileTraversal", {"--cgroup", "../../tasks=1"}, "not a cgroup file name"},
    {"MissingId", {"--no-id"}, "--id: required"},
    {"MissingExecFile", {"--no-exec-file"}, "--exec-file: required"},
    {"MissingUid", {"--no-uid"}, "--uid: required"},
    {"RepeatedFlag", {"--uid", "5", "--uid", "6"}, "given more than once"},
    {"MissingValue", {"--netns"}, "missing value"},
};

INSTANTIATE_TEST_SUITE_P(Inputs, JailerRefuses, ::testing::ValuesIn(kRefused),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

TEST(JailerCli, HelpPrintsUsageAndExitsZero) {
  Result result = RunJailer({"--help"});
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_THAT(result.out, HasSubstr("usage: ember-jailer"));
  EXPECT_THAT(result.out, HasSubstr("--pass-fd"));
}

}  // namespace
}  // namespace ember::jailer
