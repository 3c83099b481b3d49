#include "jailer/jailer_args.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ember::jailer {
namespace {

using ::testing::HasSubstr;

// A complete, valid command line; tests override or append to it.
std::vector<std::string> Valid(std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {"--id",  "vm-1", "--exec-file", "/usr/bin/ember-vmm",
                                   "--uid", "123",  "--gid",       "100"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

// Replaces the value following `flag` in Valid().
std::vector<std::string> With(const std::string& flag, const std::string& value) {
  std::vector<std::string> argv = Valid();
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag) argv[i + 1] = value;
  }
  return argv;
}

void ExpectRefused(const std::vector<std::string>& argv, const std::string& flag,
                   const std::string& why) {
  absl::StatusOr<JailerArgs> args = ParseJailerArgs(argv);
  ASSERT_FALSE(args.ok()) << "accepted: " << ::testing::PrintToString(argv);
  EXPECT_EQ(args.status().code(), absl::StatusCode::kInvalidArgument);
  std::string message(args.status().message());
  EXPECT_EQ(message.rfind(flag, 0), 0u) << message;
  EXPECT_THAT(message, HasSubstr(why));
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST(JailerArgs, ParsesFullCommandLine) {
  auto args = ParseJailerArgs(Valid({"--chroot-base-dir",
                                     "/var/jail",
                                     "--netns",
                                     "/run/netns/a",
                                     "--new-pid-ns",
                                     "--cgroup-version",
                                     "1",
                                     "--cgroup",
                                     "memory.limit_in_bytes=1024",
                                     "--cgroup",
                                     "pids.max=8",
                                     "--parent-cgroup",
                                     "/ember/vms/",
                                     "--resource-limit",
                                     "fsize=4096",
                                     "--resource-limit",
                                     "no-file=64",
                                     "--daemonize",
                                     "--pass-fd",
                                     "5",
                                     "--",
                                     "--config",
                                     "vm.json"}));
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->id, "vm-1");
  EXPECT_EQ(args->uid, 123u);
  EXPECT_EQ(args->gid, 100u);
  EXPECT_EQ(args->chroot_base_dir, "/var/jail");
  EXPECT_EQ(args->netns, "/run/netns/a");
  EXPECT_TRUE(args->new_pid_ns);
  EXPECT_EQ(args->cgroup_version, 1);
  ASSERT_EQ(args->cgroups.size(), 2u);
  EXPECT_EQ(args->cgroups[0].file, "memory.limit_in_bytes");
  EXPECT_EQ(args->cgroups[0].value, "1024");
  EXPECT_EQ(args->cgroups[1].file, "pids.max");
  EXPECT_EQ(args->parent_cgroup, "ember/vms");
  EXPECT_EQ(args->fsize_limit, 4096u);
  EXPECT_EQ(args->no_file_limit, 64u);
  EXPECT_TRUE(args->daemonize);
  EXPECT_EQ(args->pass_fd, 5);
  EXPECT_EQ(args->vmm_args, (std::vector<std::string>{"--config", "vm.json"}));
  EXPECT_EQ(args->ChrootDir(), "/var/jail/ember-vmm/vm-1/root");
  EXPECT_EQ(args->CgroupRelativePath(), "ember/vms/vm-1");
}

TEST(JailerArgs, DefaultsMatchFirecrackerWhereUnspecified) {
  auto args = ParseJailerArgs(Valid());
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->chroot_base_dir, "/srv/jailer");
  EXPECT_EQ(args->no_file_limit, 2048u);
  EXPECT_FALSE(args->fsize_limit.has_value());
  EXPECT_EQ(args->cgroup_version, 2);
  EXPECT_EQ(args->CgroupRelativePath(), "ember-vmm/vm-1");
  EXPECT_FALSE(args->daemonize);
  EXPECT_FALSE(args->new_pid_ns);
  EXPECT_TRUE(args->vmm_args.empty());
}

TEST(JailerArgs, AcceptsFlagEqualsValueSpelling) {
  auto args = ParseJailerArgs({"--id=a", "--exec-file=/x/vmm", "--uid=5", "--gid=6"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->id, "a");
  EXPECT_EQ(args->ExecName(), "vmm");
  EXPECT_EQ(args->uid, 5u);
}

TEST(JailerArgs, EverythingAfterDoubleDashGoesToTheVmmVerbatim) {
  auto args = ParseJailerArgs(Valid({"--", "--id", "x", "--uid", "0", "--", "../etc"}));
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->id, "vm-1");
  EXPECT_EQ(args->vmm_args, (std::vector<std::string>{"--id", "x", "--uid", "0", "--", "../etc"}));
}

TEST(JailerArgs, IdOfMaximumLengthIsAccepted) {
  EXPECT_TRUE(ParseJailerArgs(With("--id", std::string(kMaxIdLength, 'a'))).ok());
}

TEST(JailerArgs, RefusesIdTooLong) {
  ExpectRefused(With("--id", std::string(kMaxIdLength + 1, 'a')), "--id", "at most 64");
}

TEST(JailerArgs, RefusesIdWithBadCharacters) {
  for (const char* id : {"a/b", "a_b", "a b", "a.b", "..", "vm\xc3\xa4", "a;rm"}) {
    SCOPED_TRACE(id);
    ExpectRefused(With("--id", id), "--id", "only letters, digits and dashes");
  }
}

TEST(JailerArgs, RefusesEmptyId) { ExpectRefused(With("--id", ""), "--id", "empty"); }

TEST(JailerArgs, RefusesDotDotInExecFile) {
  ExpectRefused(With("--exec-file", "/usr/bin/../../tmp/evil"), "--exec-file", "\"..\"");
  ExpectRefused(With("--exec-file", "../vmm"), "--exec-file", "\"..\"");
}

TEST(JailerArgs, RefusesExecFileWithoutName) {
  ExpectRefused(With("--exec-file", "/usr/bin/"), "--exec-file", "does not name a file");
}

TEST(JailerArgs, RefusesDotDotInChrootBase) {
  ExpectRefused(Valid({"--chroot-base-dir", "/srv/../etc"}), "--chroot-base-dir", "\"..\"");
}

TEST(JailerArgs, RefusesRelativeChrootBase) {
  ExpectRefused(Valid({"--chroot-base-dir", "srv/jail"}), "--chroot-base-dir", "not absolute");
}

TEST(JailerArgs, RefusesDotDotInNetns) {
  ExpectRefused(Valid({"--netns", "/run/netns/../../proc/1/ns/net"}), "--netns", "\"..\"");
}

TEST(JailerArgs, RefusesDotDotInParentCgroup) {
  ExpectRefused(Valid({"--cgroup", "pids.max=1", "--parent-cgroup", "a/../../b"}),
                "--parent-cgroup", "\"..\"");
}

TEST(JailerArgs, RefusesParentCgroupWithoutCgroupSettings) {
  ExpectRefused(Valid({"--parent-cgroup", "ember"}), "--parent-cgroup", "without --cgroup");
}

TEST(JailerArgs, RefusesUidZeroWithoutAllowRoot) {
  ExpectRefused(With("--uid", "0"), "--uid", "--allow-root");
}

TEST(JailerArgs, RefusesGidZeroWithoutAllowRoot) {
  ExpectRefused(With("--gid", "0"), "--gid", "--allow-root");
}

TEST(JailerArgs, AcceptsRootWithAllowRoot) {
  std::vector<std::string> argv = With("--uid", "0");
  argv.push_back("--allow-root");
  auto args = ParseJailerArgs(argv);
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(args->uid, 0u);
  EXPECT_TRUE(args->allow_root);
}

TEST(JailerArgs, RefusesMalformedUidAndGid) {
  for (const char* bad : {"-1", "12a", "", "+5", " 5", "0x10", "4294967295", "99999999999"}) {
    SCOPED_TRACE(bad);
    ExpectRefused(With("--uid", bad), "--uid", "");
    ExpectRefused(With("--gid", bad), "--gid", "");
  }
}

TEST(JailerArgs, RefusesMalformedPassFd) {
  ExpectRefused(Valid({"--pass-fd", "x"}), "--pass-fd", "not a decimal number");
  ExpectRefused(Valid({"--pass-fd", "2"}), "--pass-fd", "3 or more");
  ExpectRefused(Valid({"--pass-fd", "2147483648"}), "--pass-fd", "out of range");
}

TEST(JailerArgs, RefusesMalformedResourceLimits) {
  ExpectRefused(Valid({"--resource-limit", "fsize=abc"}), "--resource-limit", "not a decimal");
  ExpectRefused(Valid({"--resource-limit", "no-file=-1"}), "--resource-limit", "not a decimal");
  ExpectRefused(Valid({"--resource-limit", "no-file=2"}), "--resource-limit", "at least 3");
  ExpectRefused(Valid({"--resource-limit", "stack=1"}), "--resource-limit", "fsize=N");
  ExpectRefused(Valid({"--resource-limit", "fsize"}), "--resource-limit", "fsize=N");
}

TEST(JailerArgs, IsolateTapsDevicesAndNprocAreParsed) {
  auto args = ParseJailerArgs(Valid({"--isolate", "--tap", "tap0", "--tap", "tap1", "--device",
                                     "kvm", "--device", "tun", "--resource-limit", "nproc=64"}));
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_TRUE(args->isolate);
  EXPECT_EQ(args->taps, (std::vector<std::string>{"tap0", "tap1"}));
  ASSERT_TRUE(args->devices.has_value());
  EXPECT_EQ(*args->devices, (std::vector<std::string>{"kvm", "tun"}));
  EXPECT_EQ(args->nproc_limit, 64u);
}

TEST(JailerArgs, WithoutDeviceFlagsEveryDeviceNodeIsWanted) {
  auto args = ParseJailerArgs(Valid());
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_FALSE(args->devices.has_value());
  EXPECT_FALSE(args->isolate);
}

TEST(JailerArgs, RefusesTapWithoutIsolate) {
  ExpectRefused(Valid({"--tap", "tap0"}), "--tap", "needs --isolate");
  ExpectRefused(Valid({"--netns", "/run/netns/x", "--tap", "tap0"}), "--tap", "needs --isolate");
}

// A clone network made ahead (emberd's): its namespace joined, ipc and uts still new.
TEST(JailerArgs, IsolateWithNetnsJoinsThatNamespace) {
  auto args =
      ParseJailerArgs(Valid({"--isolate", "--netns", "/run/ember/netns/c1", "--tap", "tap0"}));
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_TRUE(args->isolate);
  EXPECT_EQ(args->netns, "/run/ember/netns/c1");
  EXPECT_EQ(args->taps, (std::vector<std::string>{"tap0"}));
}

TEST(JailerArgs, RefusesBadTapNamesAndUnknownDevices) {
  ExpectRefused(Valid({"--isolate", "--tap", "a/b"}), "--tap", "not a network interface name");
  ExpectRefused(Valid({"--isolate", "--tap", "0123456789abcdef"}), "--tap", "not a network");
  ExpectRefused(Valid({"--device", "mem"}), "--device", "not kvm, tun or userfaultfd");
  ExpectRefused(Valid({"--resource-limit", "nproc=0"}), "--resource-limit", "at least 1");
}

TEST(JailerArgs, RefusesUnknownCgroupVersion) {
  ExpectRefused(Valid({"--cgroup-version", "3"}), "--cgroup-version", "not 1 or 2");
}

TEST(JailerArgs, RefusesMalformedCgroupSettings) {
  ExpectRefused(Valid({"--cgroup", "memory.max"}), "--cgroup", "not FILE=VALUE");
  ExpectRefused(Valid({"--cgroup", "memory.max="}), "--cgroup", "not FILE=VALUE");
  ExpectRefused(Valid({"--cgroup", "../tasks=1"}), "--cgroup", "not a cgroup file name");
  ExpectRefused(Valid({"--cgroup", "a/memory.max=1"}), "--cgroup", "not a cgroup file name");
  ExpectRefused(Valid({"--cgroup", "tasks=1"}), "--cgroup", "not a cgroup file name");
}

TEST(JailerArgs, RefusesUnknownFlag) {
  ExpectRefused(Valid({"--seccomp-level", "0"}), "--seccomp-level", "unknown flag");
  ExpectRefused(Valid({"-x"}), "-x", "unknown flag");
}

TEST(JailerArgs, RefusesStrayArgumentBeforeDoubleDash) {
  ExpectRefused(Valid({"vm.json"}), "vm.json", "after \"--\"");
}

TEST(JailerArgs, RefusesRepeatedSingleValueFlag) {
  ExpectRefused(Valid({"--id", "other"}), "--id", "more than once");
}

TEST(JailerArgs, RefusesFlagMissingItsValue) {
  ExpectRefused(Valid({"--netns"}), "--netns", "missing value");
}

TEST(JailerArgs, RefusesValueOnSwitch) {
  ExpectRefused(Valid({"--daemonize=yes"}), "--daemonize", "takes no value");
}

TEST(JailerArgs, RefusesMissingRequiredFlags) {
  ExpectRefused({"--exec-file", "/x", "--uid", "1", "--gid", "1"}, "--id", "required");
  ExpectRefused({"--id", "a", "--uid", "1", "--gid", "1"}, "--exec-file", "required");
  ExpectRefused({"--id", "a", "--exec-file", "/x", "--gid", "1"}, "--uid", "required");
  ExpectRefused({"--id", "a", "--exec-file", "/x", "--uid", "1"}, "--gid", "required");
}

TEST(JailerArgs, RefusesMissingExecFile) {
  absl::Status status = CheckExecFile("/nonexistent/ember-vmm");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("does not exist"));
}

TEST(JailerArgs, RefusesDirectoryAsExecFile) {
  absl::Status status = CheckExecFile("/tmp");
  EXPECT_THAT(std::string(status.message()), HasSubstr("not a regular file"));
}

TEST(JailerArgs, RefusesNonExecutableExecFile) {
  absl::Status status = CheckExecFile(EMBER_SOURCE_DIR "/CMakeLists.txt");
  EXPECT_THAT(std::string(status.message()), HasSubstr("not executable"));
}

}  // namespace
}  // namespace ember::jailer
