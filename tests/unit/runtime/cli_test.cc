// runc's command line as containerd's shim, podman's conmon and cri-o pass it.
#include "vmm/runtime/cli.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <string>
#include <vector>

namespace ember::runtime {
namespace {

TEST(RuntimeCli, ShimsCreateLineGivesGlobalsFlagsAndId) {
  absl::StatusOr<Invocation> inv =
      ParseCommandLine({"--root", "/run/containerd/runc/default", "--log", "/b/log.json",
                        "--log-format", "json", "--systemd-cgroup", "create", "--bundle", "/b",
                        "--pid-file", "/b/init.pid", "--no-pivot", "--no-new-keyring", "c1"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->global.root, "/run/containerd/runc/default");
  EXPECT_EQ(inv->global.log_path, "/b/log.json");
  EXPECT_EQ(inv->global.log_format, "json");
  EXPECT_TRUE(inv->global.systemd_cgroup);
  EXPECT_EQ(inv->command, "create");
  EXPECT_EQ(inv->Get("bundle"), "/b");
  EXPECT_EQ(inv->Get("pid-file"), "/b/init.pid");
  EXPECT_TRUE(inv->Has("no-pivot"));
  EXPECT_TRUE(inv->Has("no-new-keyring"));
  EXPECT_EQ(inv->args, std::vector<std::string>{"c1"});
}

TEST(RuntimeCli, FlagsTakeOneOrTwoDashesShortNamesAndEqualsValues) {
  absl::StatusOr<Invocation> inv =
      ParseCommandLine({"-root=/r", "create", "-b", "/b", "-pid-file=/p", "c1"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->global.root, "/r");
  EXPECT_EQ(inv->Get("bundle"), "/b");
  EXPECT_EQ(inv->Get("pid-file"), "/p");
}

TEST(RuntimeCli, FlagsEndAtTheFirstArgumentSoExecKeepsItsCommandsFlags) {
  absl::StatusOr<Invocation> inv =
      ParseCommandLine({"exec", "-e", "A=1", "--env", "B=2", "-t", "c1", "sh", "-c", "echo x"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->flags.at("env"), (std::vector<std::string>{"A=1", "B=2"}));
  EXPECT_TRUE(inv->Has("tty"));
  EXPECT_EQ(inv->args, (std::vector<std::string>{"c1", "sh", "-c", "echo x"}));
}

TEST(RuntimeCli, DoubleDashEndsFlags) {
  absl::StatusOr<Invocation> inv = ParseCommandLine({"kill", "--", "c1", "-9"});
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_FALSE(inv->Has("all"));
  EXPECT_EQ(inv->args, (std::vector<std::string>{"c1", "-9"}));
}

TEST(RuntimeCli, UnknownFlagIsRefusedInUrfavesWords) {
  absl::StatusOr<Invocation> inv = ParseCommandLine({"delete", "--frobnicate", "c1"});
  ASSERT_FALSE(inv.ok());
  EXPECT_EQ(inv.status().message(), "flag provided but not defined: -frobnicate");
}

TEST(RuntimeCli, FlagWithoutItsValueIsRefused) {
  absl::StatusOr<Invocation> inv = ParseCommandLine({"create", "--bundle"});
  ASSERT_FALSE(inv.ok());
  EXPECT_EQ(inv.status().message(), "flag needs an argument: -bundle");
}

TEST(RuntimeCli, UnknownCommandIsRefused) {
  absl::StatusOr<Invocation> inv = ParseCommandLine({"frob", "c1"});
  ASSERT_FALSE(inv.ok());
  EXPECT_NE(inv.status().message().find("frob"), std::string::npos);
}

TEST(RuntimeCli, BadLogFormatIsRefused) {
  EXPECT_FALSE(ParseCommandLine({"--log-format", "xml", "state", "c1"}).ok());
}

TEST(RuntimeCli, VersionAndNoCommandNeedNoId) {
  absl::StatusOr<Invocation> version = ParseCommandLine({"--version"});
  ASSERT_TRUE(version.ok());
  EXPECT_TRUE(version->version);
  EXPECT_FALSE(version->help);
  absl::StatusOr<Invocation> none = ParseCommandLine({});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->help);
  EXPECT_EQ(none->global.root, "/run/ember-runtime");
}

TEST(RuntimeCli, SignalsAreTakenByNameWithOrWithoutSigAndByNumber) {
  EXPECT_EQ(*ParseSignal("KILL"), SIGKILL);
  EXPECT_EQ(*ParseSignal("sigterm"), SIGTERM);
  EXPECT_EQ(*ParseSignal("SIGUSR1"), SIGUSR1);
  EXPECT_EQ(*ParseSignal("9"), 9);
  EXPECT_FALSE(ParseSignal("0").ok());
  EXPECT_FALSE(ParseSignal("SIGFROB").ok());
  EXPECT_FALSE(ParseSignal("").ok());
  EXPECT_FALSE(ParseSignal("99").ok());
}

}  // namespace
}  // namespace ember::runtime
