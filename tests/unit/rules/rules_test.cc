// The rules library on its own: linked here against the full messages, as emberd links it,
// and with nothing of the VMM (ember-vmm's tests cover the lite build through
// ValidateVmConfig and PrepareRestore).
#include <gtest/gtest.h>

#include "vmm/rules/restore_overrides.h"
#include "vmm/rules/vm_config_rules.h"

namespace ember::rules {
namespace {

v1::VmConfig SnapshottedConfig() {
  v1::VmConfig config;
  v1::Drive* drive = config.add_drives();
  drive->set_drive_id("rootfs");
  drive->set_path_on_host("/images/rootfs.ext4");
  v1::NetworkInterface* ni = config.add_network_interfaces();
  ni->set_iface_id("eth0");
  ni->set_host_dev_name("tap-src");
  ni->set_guest_mac("06:00:ac:10:00:02");
  config.mutable_vsock()->set_vsock_id("vsock0");
  config.mutable_vsock()->set_guest_cid(3);
  config.mutable_vsock()->set_uds_path("/run/src.vsock");
  config.mutable_logger()->set_log_path("/var/log/src.log");
  config.mutable_logger()->set_level("Debug");
  config.mutable_metrics()->set_metrics_path("/var/lib/src.metrics");
  return config;
}

std::string ErrorOf(const v1::VmConfig& config) {
  absl::Status status = CheckVmConfig(config);
  return status.ok() ? "" : std::string(status.message());
}

TEST(RestoreOverrides, StateFilesLogAndMetricsPathsAreNeverKept) {
  v1::VmConfig config = SnapshottedConfig();
  ASSERT_TRUE(ApplyRestoreOverrides({}, "overrides", UnknownDevices::kRefuse, &config).ok());
  EXPECT_EQ(config.logger().log_path(), "");
  EXPECT_EQ(config.metrics().metrics_path(), "");
  EXPECT_EQ(config.logger().level(), "Debug");  // not a host file: kept
}

TEST(RestoreOverrides, EachOverrideReplacesOnlyItsDevicesField) {
  v1::VmConfig config = SnapshottedConfig();
  v1::RestoreOverrides overrides;
  (*overrides.mutable_drive_path_on_host())["rootfs"] = "/clones/1.ext4";
  (*overrides.mutable_iface_guest_mac())["eth0"] = "06:00:ac:10:00:03";
  overrides.set_vsock_uds_path("/run/clone.vsock");
  ASSERT_TRUE(ApplyRestoreOverrides(overrides, "overrides", UnknownDevices::kRefuse, &config).ok());
  EXPECT_EQ(config.drives(0).path_on_host(), "/clones/1.ext4");
  EXPECT_EQ(config.network_interfaces(0).guest_mac(), "06:00:ac:10:00:03");
  EXPECT_EQ(config.network_interfaces(0).host_dev_name(), "tap-src");  // a MAC alone keeps the tap
  EXPECT_EQ(config.vsock().uds_path(), "/run/clone.vsock");
}

TEST(RestoreOverrides, OverrideNamingADeviceTheSnapshotLacksIsNamed) {
  v1::VmConfig config = SnapshottedConfig();
  v1::RestoreOverrides overrides;
  (*overrides.mutable_iface_host_dev_name())["eth9"] = "tap9";
  absl::Status status =
      ApplyRestoreOverrides(overrides, "overrides[2]", UnknownDevices::kRefuse, &config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "overrides[2].iface_host_dev_name: the snapshot has no network interface \"eth9\"");
}

TEST(RestoreOverrides, UnknownDevicesAreLeftToTheVmmWhenTheConfigurationIsUnknown) {
  v1::VmConfig config;  // a state file emberd did not write: its configuration is unknown
  v1::RestoreOverrides overrides;
  (*overrides.mutable_drive_path_on_host())["data"] = "/clones/data.img";
  EXPECT_TRUE(ApplyRestoreOverrides(overrides, "overrides", UnknownDevices::kIgnore, &config).ok());
}

TEST(VmConfigRules, EmptyConfigIsValidAndGetsTheDefaults) {
  EXPECT_EQ(ErrorOf({}), "");
  EXPECT_EQ(VcpuCountOf({}), kDefaultVcpus);
  EXPECT_EQ(MemMibOf({}), kDefaultMemMib);
}

TEST(VmConfigRules, ErrorsNameTheFieldAsTheConfigFileSpellsIt) {
  v1::VmConfig config = SnapshottedConfig();
  config.mutable_drives(0)->set_io_engine("Fast");
  EXPECT_EQ(ErrorOf(config), "drives[0].io_engine: \"Fast\" is not Async or Sync");
}

TEST(VmConfigRules, VcpuCountBeyondTheLimitIsRefused) {
  v1::VmConfig config;
  config.mutable_machine_config()->set_vcpu_count(kMaxVcpus + 1);
  EXPECT_EQ(ErrorOf(config), "machine-config.vcpu_count: must be between 1 and 32, got 33");
}

TEST(VmConfigRules, BootArgsBeyondTheKernelsCommandLineAreRefused) {
  v1::VmConfig config;
  config.mutable_boot_source()->set_boot_args(std::string(kMaxCmdlineBytes + 1, 'a'));
  EXPECT_EQ(ErrorOf(config), "boot-source.boot_args: at most 2047 bytes, got 2048");
}

TEST(VmConfigRules, RateLimiterIsCheckedByTheOneBucketRule) {
  v1::VmConfig config = SnapshottedConfig();
  config.mutable_network_interfaces(0)->mutable_tx_rate_limiter()->mutable_ops()->set_size(10);
  EXPECT_EQ(ErrorOf(config),
            "network-interfaces[0].tx_rate_limiter.ops.refill_time: must be 1 to 3600000 ms "
            "when size is set, got 0");
}

TEST(VmConfigRules, TwoInterfacesOnOneTapAreRefused) {
  v1::VmConfig config = SnapshottedConfig();
  v1::NetworkInterface* second = config.add_network_interfaces();
  second->set_iface_id("eth1");
  second->set_host_dev_name("tap-src");
  EXPECT_EQ(ErrorOf(config),
            "network-interfaces[1].host_dev_name: \"tap-src\" is used by another interface");
}

}  // namespace
}  // namespace ember::rules
