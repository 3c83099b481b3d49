// Firecracker's deprecated names and the features Ember lacks, on the messages themselves (as
// emberd and the Firecracker API see them); the JSON files go through ember-config in
// tests/unit/vmm/firecracker_config_test.cc.
#include <gtest/gtest.h>

#include "vmm/rules/firecracker_compat.h"
#include "vmm/rules/vm_config_rules.h"

namespace ember::rules {
namespace {

std::string ErrorOf(const v1::VmConfig& config) {
  absl::Status status = CheckVmConfig(config);
  return status.ok() ? "" : std::string(status.message());
}

std::string ResolveError(v1::VmConfig* config) {
  absl::Status status = ResolveDeprecatedNames(config);
  return status.ok() ? "" : std::string(status.message());
}

TEST(FirecrackerCompat, HtEnabledBecomesSmt) {
  v1::VmConfig config;
  config.mutable_machine_config()->set_ht_enabled(false);
  ASSERT_EQ(ResolveError(&config), "");
  EXPECT_FALSE(config.machine_config().has_ht_enabled());
  EXPECT_FALSE(config.machine_config().smt());
  EXPECT_EQ(ErrorOf(config), "");

  config.mutable_machine_config()->set_ht_enabled(true);
  ASSERT_EQ(ResolveError(&config), "");
  EXPECT_EQ(ErrorOf(config),
            "machine-config.smt: Ember does not support SMT (simultaneous multithreading)");
}

TEST(FirecrackerCompat, LogFifoAndMetricsFifoBecomeTheirPaths) {
  v1::VmConfig config;
  config.mutable_logger()->set_log_fifo("/run/fc.log");
  config.mutable_logger()->set_metrics_fifo("/run/fc.metrics");
  ASSERT_EQ(ResolveError(&config), "");
  EXPECT_EQ(config.logger().log_path(), "/run/fc.log");
  EXPECT_EQ(config.metrics().metrics_path(), "/run/fc.metrics");
  EXPECT_EQ(config.logger().log_fifo(), "");
  EXPECT_EQ(config.logger().metrics_fifo(), "");
  EXPECT_EQ(ErrorOf(config), "");
}

TEST(FirecrackerCompat, MetricsSectionsFifoBecomesItsPath) {
  v1::VmConfig config;
  config.mutable_metrics()->set_metrics_fifo("/run/m");
  ASSERT_EQ(ResolveError(&config), "");
  EXPECT_EQ(config.metrics().metrics_path(), "/run/m");
}

TEST(FirecrackerCompat, DeprecatedAndCurrentNameDisagreeingIsRefused) {
  v1::VmConfig config;
  config.mutable_logger()->set_log_fifo("/run/a");
  config.mutable_logger()->set_log_path("/run/b");
  EXPECT_EQ(ResolveError(&config),
            "logger.log_fifo: \"/run/a\" disagrees with logger.log_path \"/run/b\" (the same "
            "setting by its deprecated name); give one");
}

TEST(FirecrackerCompat, DeprecatedNameLeftUnresolvedIsRefused) {
  v1::VmConfig config;
  config.mutable_machine_config()->set_ht_enabled(false);
  EXPECT_EQ(ErrorOf(config), "machine-config.ht_enabled: a deprecated name of smt; give smt");
}

TEST(FirecrackerCompat, VsockWithoutIdIsNamedVsock) {
  v1::VmConfig config;
  config.mutable_vsock()->set_guest_cid(3);
  config.mutable_vsock()->set_uds_path("/run/v.sock");
  ASSERT_EQ(ResolveError(&config), "");
  EXPECT_EQ(config.vsock().vsock_id(), "vsock");
  EXPECT_EQ(ErrorOf(config), "");
}

TEST(FirecrackerCompat, EachUnsupportedSectionIsRefusedByName) {
  struct Case {
    const char* expected;
    void (*set)(v1::VmConfig*);
  };
  const Case cases[] = {
      {"balloon: Ember does not support the balloon device",
       [](v1::VmConfig* c) { c->mutable_balloon()->set_amount_mib(64); }},
      {"entropy: Ember does not support the entropy device (virtio-rng)",
       [](v1::VmConfig* c) { c->mutable_entropy(); }},
      {"mmds-config: Ember does not support MMDS (the microVM metadata service)",
       [](v1::VmConfig* c) { c->mutable_mmds_config()->add_network_interfaces("eth0"); }},
      {"mmds-version: Ember does not support MMDS (the microVM metadata service)",
       [](v1::VmConfig* c) { c->set_mmds_version("V1"); }},
      {"cpu-config: Ember does not support custom CPU templates",
       [](v1::VmConfig* c) { c->mutable_cpu_config(); }},
      {"pmem: Ember does not support virtio-pmem devices",
       [](v1::VmConfig* c) { c->add_pmem()->set_id("pmem0"); }},
      {"memory-hotplug: Ember does not support memory hotplug",
       [](v1::VmConfig* c) { c->mutable_memory_hotplug()->set_total_size_mib(1024); }},
  };
  for (const Case& c : cases) {
    v1::VmConfig config;
    c.set(&config);
    EXPECT_EQ(ErrorOf(config), c.expected);
  }
}

TEST(FirecrackerCompat, HugePagesNoneIsAcceptedAnd2MRefused) {
  v1::VmConfig config;
  config.mutable_machine_config()->set_huge_pages("None");
  EXPECT_EQ(ErrorOf(config), "");
  config.mutable_machine_config()->set_huge_pages("2M");
  EXPECT_EQ(ErrorOf(config),
            "machine-config.huge_pages: Ember does not support huge pages (\"2M\"); give None");
  config.mutable_machine_config()->set_huge_pages("1G");
  EXPECT_EQ(ErrorOf(config), "machine-config.huge_pages: \"1G\" is not None or 2M");
}

TEST(FirecrackerCompat, FirecrackersStaticCpuTemplateIsRefusedByName) {
  v1::VmConfig config;
  config.mutable_machine_config()->set_cpu_template("T2S");
  EXPECT_EQ(ErrorOf(config),
            "machine-config.cpu_template: Ember does not support Firecracker's static CPU "
            "template \"T2S\" (supported: None or host, baseline)");
}

TEST(FirecrackerCompat, VhostUserDriveIsRefused) {
  v1::VmConfig config;
  v1::Drive* drive = config.add_drives();
  drive->set_drive_id("rootfs");
  drive->set_socket("/run/vhost.sock");
  EXPECT_EQ(ErrorOf(config), "drives[0].socket: Ember does not support vhost-user drives");
}

TEST(FirecrackerCompat, InterfaceAllowingMmdsRequestsIsRefused) {
  v1::VmConfig config;
  v1::NetworkInterface* ni = config.add_network_interfaces();
  ni->set_iface_id("eth0");
  ni->set_host_dev_name("tap0");
  ni->set_allow_mmds_requests(true);
  EXPECT_EQ(ErrorOf(config),
            "network-interfaces[0].allow_mmds_requests: Ember does not support MMDS (the microVM "
            "metadata service)");
}

TEST(FirecrackerCompat, LoggerModuleLevelOffAndOptionsAreRefused) {
  v1::VmConfig config;
  config.mutable_logger()->set_module("api_server::request");
  EXPECT_EQ(ErrorOf(config), "logger.module: Ember does not support filtering its log by module");
  config.mutable_logger()->clear_module();
  config.mutable_logger()->set_level("off");
  EXPECT_EQ(ErrorOf(config),
            "logger.level: Ember does not support turning its log off (\"Off\"); Error logs the "
            "least");
  config.mutable_logger()->set_level("warn");
  config.mutable_logger()->add_options("LogDirtyPages");
  EXPECT_EQ(ErrorOf(config),
            "logger.options: Ember does not support logger options (\"LogDirtyPages\")");
}

TEST(FirecrackerCompat, SerialOutputPathAndRateLimitAreRefusedAndAnEmptySectionIsNot) {
  v1::VmConfig config;
  config.mutable_serial()->mutable_rate_limiter()->set_refill_time(100);
  EXPECT_EQ(ErrorOf(config), "");
  config.mutable_serial()->mutable_rate_limiter()->set_size(4096);
  EXPECT_EQ(ErrorOf(config),
            "serial.rate_limiter: Ember does not support a rate limit on the serial console "
            "(console.max_bytes bounds it)");
  config.mutable_serial()->set_serial_out_path("/run/console");
  EXPECT_EQ(ErrorOf(config),
            "serial.serial_out_path: Ember does not support a serial output path in the config; "
            "give ember-vmm --serial-out");
}

}  // namespace
}  // namespace ember::rules
