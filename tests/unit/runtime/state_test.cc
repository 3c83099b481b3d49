// A container's record on disk, its OCI state, and the id rule.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "nlohmann/json.hpp"
#include "tests/support/files.h"
#include "vmm/runtime/container_state.h"
#include "vmm/runtime/runtime_config.h"
#include "vmm/runtime/runtime_log.h"

namespace ember::runtime {
namespace {

using nlohmann::json;

ContainerRecord Sample() {
  ContainerRecord record;
  record.id = "c1";
  record.bundle = "/b";
  record.rootfs = "/b/rootfs";
  record.created = "2026-01-01T00:00:00.000000000Z";
  record.pid = 4242;
  record.pid_start = 99;
  record.annotations = {{"io.ember.vcpus", "2"}};
  record.image_lease = "KEY/TOKEN";
  return record;
}

TEST(RuntimeState, IdsFollowRuncsRule) {
  for (const char* good : {"c1", "a.b-c_d+e", "0123456789abcdef"}) {
    EXPECT_TRUE(ValidateId(good).ok()) << good;
  }
  for (const char* bad : {"", ".", "..", "a/b", "../x", "a b", "a\nb"}) {
    EXPECT_FALSE(ValidateId(bad).ok()) << bad;
  }
  EXPECT_FALSE(ValidateId(std::string(1025, 'a')).ok());
}

TEST(RuntimeState, RecordSurvivesARoundTripThroughItsFile) {
  testing::ScopedTempDir dir("ember-runtime-state");
  StateRoot root(dir.path() + "/root");
  ASSERT_TRUE(root.CreateContainerDir("c1").ok());
  ASSERT_TRUE(root.Save(Sample()).ok());
  absl::StatusOr<ContainerRecord> loaded = root.Load("c1");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->bundle, "/b");
  EXPECT_EQ(loaded->pid, 4242);
  EXPECT_EQ(loaded->pid_start, 99u);
  EXPECT_EQ(loaded->image_lease, "KEY/TOKEN");
  EXPECT_EQ(loaded->annotations.at("io.ember.vcpus"), "2");
  EXPECT_EQ(root.List(), std::vector<std::string>{"c1"});
}

TEST(RuntimeState, SecondCreateOfAnIdIsAlreadyExists) {
  testing::ScopedTempDir dir("ember-runtime-state");
  StateRoot root(dir.path());
  ASSERT_TRUE(root.CreateContainerDir("c1").ok());
  absl::Status again = root.CreateContainerDir("c1");
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(again.message().find("already exists"), std::string::npos);
}

TEST(RuntimeState, UnknownIdIsNotFoundInRuncsWords) {
  testing::ScopedTempDir dir("ember-runtime-state");
  absl::StatusOr<ContainerRecord> record = StateRoot(dir.path()).Load("nope");
  EXPECT_EQ(record.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(record.status().message().find("does not exist"), std::string::npos);
}

TEST(RuntimeState, DamagedRecordIsDataLossNotACrash) {
  testing::ScopedTempDir dir("ember-runtime-state");
  StateRoot root(dir.path());
  ASSERT_TRUE(root.CreateContainerDir("c1").ok());
  std::ofstream(root.RecordPath("c1")) << "{\"id\": 3";
  EXPECT_EQ(root.Load("c1").status().code(), absl::StatusCode::kDataLoss);
}

TEST(RuntimeState, OciStateHasTheSpecsFieldsAndPidZeroOnceStopped) {
  json running = json::parse(OciStateJson(Sample(), ContainerStatus::kRunning));
  EXPECT_EQ(running["ociVersion"], "1.0.2");
  EXPECT_EQ(running["id"], "c1");
  EXPECT_EQ(running["status"], "running");
  EXPECT_EQ(running["pid"], 4242);
  EXPECT_EQ(running["bundle"], "/b");
  EXPECT_EQ(running["annotations"]["io.ember.vcpus"], "2");
  json stopped = json::parse(OciStateJson(Sample(), ContainerStatus::kStopped));
  EXPECT_EQ(stopped["status"], "stopped");
  EXPECT_EQ(stopped["pid"], 0);
}

TEST(RuntimeState, SupervisorIsAliveOnlyWithItsOwnStartTime) {
  ContainerRecord record = Sample();
  record.pid = ::getpid();
  record.pid_start = ProcessStartTime(::getpid()).value();
  EXPECT_TRUE(SupervisorAlive(record));
  record.pid_start += 1;  // the same pid, another process
  EXPECT_FALSE(SupervisorAlive(record));
  record.pid = 0;
  EXPECT_FALSE(SupervisorAlive(record));
}

TEST(RuntimeLogLine, JsonLineIsWhatContainerdsShimReads) {
  json line =
      json::parse(RuntimeLog::FormatLine("json", "error", "container \"x\" does not exist", "T"));
  EXPECT_EQ(line["level"], "error");
  EXPECT_EQ(line["msg"], "container \"x\" does not exist");
  EXPECT_EQ(line["time"], "T");
  EXPECT_EQ(RuntimeLog::FormatLine("text", "error", "a \"b\"", "T"),
            "time=\"T\" level=error msg=\"a \\\"b\\\"\"\n");
}

TEST(RuntimeConfigFile, FieldsAreReadAndDefaultsFilled) {
  absl::StatusOr<RuntimeConfig> config =
      ParseRuntimeConfig(R"({"kernel": "/k", "boot_timeout_ms": 5000, "image_cache_dir": "/c"})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->kernel, "/k");
  EXPECT_EQ(config->boot_timeout_ms, 5000);
  EXPECT_EQ(config->image_cache_dir, "/c");
  EXPECT_FALSE(config->vmm_path.empty());
  EXPECT_FALSE(config->rootfs_tool.empty());
}

TEST(RuntimeConfigFile, JailedByDefaultWithJailsBesideTheImages) {
  absl::StatusOr<RuntimeConfig> config = ParseRuntimeConfig(R"({"image_cache_dir": "/c"})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->jailer.enabled, ::geteuid() == 0);  // only root can jail
  EXPECT_EQ(config->jailer.chroot_base_dir, "/c/jails");
  EXPECT_FALSE(config->jailer.path.empty());
  EXPECT_GT(config->jailer.uid_base, 0u);
}

TEST(RuntimeConfigFile, JailerSettingsAreReadAndCheckedNamingTheField) {
  absl::StatusOr<RuntimeConfig> config = ParseRuntimeConfig(
      R"({"jailer": {"enabled": false, "path": "/j", "chroot_base_dir": "/srv/jails",
                     "uid_base": 5000, "uid_count": 10, "cgroup_parent": "ember/containers"}})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->jailer.enabled);
  EXPECT_EQ(config->jailer.path, "/j");
  EXPECT_EQ(config->jailer.chroot_base_dir, "/srv/jails");
  EXPECT_EQ(config->jailer.uid_base, 5000u);
  EXPECT_EQ(config->jailer.uid_count, 10u);
  EXPECT_EQ(config->jailer.cgroup_parent, "ember/containers");
  for (const char* bad : {R"({"jailer": {"uid_base": 0}})", R"({"jailer": {"uid_count": 0}})",
                          R"({"jailer": {"cgroup_parent": "../x"}})", R"({"jailer": {"uid": 1}})",
                          R"({"jailer": true})"}) {
    absl::StatusOr<RuntimeConfig> refused = ParseRuntimeConfig(bad);
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_NE(refused.status().message().find("jailer"), std::string::npos) << bad;
  }
}

TEST(RuntimeConfigFile, UnknownFieldOrWrongTypeIsRefusedNamingIt) {
  absl::StatusOr<RuntimeConfig> unknown = ParseRuntimeConfig(R"({"kernal": "/k"})");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("kernal"), std::string::npos);
  absl::StatusOr<RuntimeConfig> type = ParseRuntimeConfig(R"({"boot_timeout_ms": "soon"})");
  ASSERT_FALSE(type.ok());
  EXPECT_NE(type.status().message().find("boot_timeout_ms"), std::string::npos);
  EXPECT_FALSE(ParseRuntimeConfig("[").ok());
}

TEST(RuntimeConfigFile, MissingDefaultFileIsDefaultsButAMissingNamedOneIsAnError) {
  EXPECT_TRUE(LoadRuntimeConfig("/nonexistent/runtime.json", false).ok());
  EXPECT_FALSE(LoadRuntimeConfig("/nonexistent/runtime.json", true).ok());
}

}  // namespace
}  // namespace ember::runtime
