// Config files shaped like those Firecracker publishes (tests/data/firecracker/), read by the
// built ember-config as ember-vmm reads them, and refused by ember-config and ember-vmm alike
// where they ask for what Ember does not have. Booting from them: the integration tests.
#include <gtest/gtest.h>

#include <algorithm>

#include "tests/support/process.h"
#include "vmm/config_loader.h"

namespace ember::vmm {
namespace {

using testing::BinPath;
using testing::ProcessResult;
using testing::RunProcess;

constexpr char kConfigTool[] = EMBER_BIN_DIR "/ember-config";

std::string DataFile(const std::string& name) {
  return std::string(EMBER_SOURCE_DIR) + "/tests/data/firecracker/" + name;
}

v1::VmConfig Load(const std::string& name) {
  auto config = LoadVmConfigFile(DataFile(name), kConfigTool);
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : v1::VmConfig();
}

TEST(FirecrackerConfigFile, MinimalFileLoads) {
  v1::VmConfig config = Load("vm_config.json");
  EXPECT_EQ(config.boot_source().kernel_image_path(), "vmlinux.bin");
  ASSERT_EQ(config.drives_size(), 1);
  EXPECT_TRUE(config.drives(0).is_root_device());
  EXPECT_EQ(config.machine_config().vcpu_count(), 2u);
  EXPECT_EQ(config.machine_config().mem_size_mib(), 256u);
}

TEST(FirecrackerConfigFile, DeprecatedNamesLoadAsTheCurrentOnes) {
  v1::VmConfig config = Load("vm_config_deprecated_names.json");
  EXPECT_EQ(config.logger().log_path(), "vmm.log");
  EXPECT_EQ(config.metrics().metrics_path(), "vmm.metrics");
  EXPECT_EQ(config.logger().log_fifo(), "");
  EXPECT_EQ(config.logger().metrics_fifo(), "");
  EXPECT_FALSE(config.machine_config().has_ht_enabled());
  EXPECT_FALSE(config.machine_config().smt());
}

TEST(FirecrackerConfigFile, NullSectionsAreOff) {
  v1::VmConfig config = Load("vm_config_null_sections.json");
  EXPECT_FALSE(config.has_balloon());
  EXPECT_FALSE(config.has_entropy());
  EXPECT_FALSE(config.has_mmds_config());
  EXPECT_FALSE(config.has_cpu_config());
  EXPECT_FALSE(config.has_memory_hotplug());
  EXPECT_FALSE(config.has_serial());
  EXPECT_FALSE(config.has_vsock());
  EXPECT_FALSE(config.has_logger());
  EXPECT_FALSE(config.has_metrics());
  EXPECT_EQ(config.pmem_size(), 0);
  EXPECT_EQ(config.mmds_version(), "");
  ASSERT_EQ(config.drives_size(), 1);
  EXPECT_EQ(config.drives(0).partuuid(), "");
  EXPECT_FALSE(config.drives(0).has_rate_limiter());
  EXPECT_EQ(config.drives(0).io_engine(), "Sync");
}

TEST(FirecrackerConfigFile, EveryDriveNetVsockLoggerAndMetricsOptionLoads) {
  v1::VmConfig config = Load("vm_config_every_option.json");
  ASSERT_EQ(config.drives_size(), 2);
  const v1::Drive& root = config.drives(0);
  EXPECT_EQ(root.partuuid(), "7c9e6679-7425-40de-944b-e07fc1f90ae7");
  EXPECT_EQ(root.cache_type(), "Writeback");
  EXPECT_EQ(root.io_engine(), "Async");
  EXPECT_EQ(root.rate_limiter().bandwidth().one_time_burst(), 1048576u);
  EXPECT_EQ(root.rate_limiter().ops().size(), 2000u);
  EXPECT_TRUE(config.drives(1).is_read_only());
  EXPECT_EQ(config.drives(1).io_engine(), "Sync");
  EXPECT_TRUE(config.machine_config().track_dirty_pages());
  EXPECT_EQ(config.machine_config().huge_pages(), "None");
  ASSERT_EQ(config.network_interfaces_size(), 1);
  const v1::NetworkInterface& ni = config.network_interfaces(0);
  EXPECT_EQ(ni.guest_mac(), "06:00:ac:10:00:02");
  EXPECT_EQ(ni.rx_rate_limiter().bandwidth().size(), 10485760u);
  EXPECT_FALSE(ni.rx_rate_limiter().has_ops());
  EXPECT_EQ(ni.tx_rate_limiter().ops().one_time_burst(), 100u);
  EXPECT_EQ(config.vsock().vsock_id(), "vsock0");
  EXPECT_EQ(config.logger().level(), "Warning");
  EXPECT_TRUE(config.logger().show_level());
  EXPECT_FALSE(config.logger().show_log_origin());
  EXPECT_TRUE(config.logger().has_show_log_origin());
  EXPECT_EQ(config.metrics().metrics_path(), "vmm.metrics");
}

struct Refusal {
  const char* file;
  const char* problem;
};

// One per section of Firecracker's format for a feature Ember does not have.
const Refusal kRefusals[] = {
    {"unsupported_balloon.json", "balloon: Ember does not support the balloon device"},
    {"unsupported_entropy.json", "entropy: Ember does not support the entropy device (virtio-rng)"},
    {"unsupported_mmds_config.json",
     "mmds-config: Ember does not support MMDS (the microVM metadata service)"},
    {"unsupported_mmds_version.json",
     "mmds-version: Ember does not support MMDS (the microVM metadata service)"},
    {"unsupported_cpu_config_path.json", "cpu-config: Ember does not support custom CPU templates"},
    {"unsupported_cpu_config_inline.json",
     "cpu-config: Ember does not support custom CPU templates"},
    {"unsupported_pmem.json", "pmem: Ember does not support virtio-pmem devices"},
    {"unsupported_memory_hotplug.json", "memory-hotplug: Ember does not support memory hotplug"},
};

void ExpectRefused(const std::string& program, const std::vector<std::string>& args,
                   const Refusal& refusal) {
  std::vector<std::string> argv = {BinPath(program)};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessResult result = RunProcess(argv);
  EXPECT_EQ(result.exit_code, 2) << refusal.file << ": " << result.err;
  EXPECT_EQ(result.err, program + ": error: config file \"" + DataFile(refusal.file) +
                            "\": " + refusal.problem + "\n");
  EXPECT_EQ(result.out, "");
}

TEST(FirecrackerConfigFile, EmberConfigRefusesEachUnsupportedSectionInOneLine) {
  for (const Refusal& refusal : kRefusals) {
    ExpectRefused("ember-config", {DataFile(refusal.file)}, refusal);
  }
}

TEST(FirecrackerConfigFile, EmberVmmRefusesEachUnsupportedSectionInOneLine) {
  for (const Refusal& refusal : kRefusals) {
    ExpectRefused("ember-vmm", {"--config", DataFile(refusal.file)}, refusal);
  }
}

}  // namespace
}  // namespace ember::vmm
