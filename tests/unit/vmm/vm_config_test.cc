#include "vmm/vm_config.h"

#include <gtest/gtest.h>

#include <fstream>

#include "vmm/config_loader.h"
#include "vmm/drive_config.h"

namespace ember::vmm {
namespace {

// The JSON goes through the built ember-config, as ember-vmm's --config does.
constexpr char kConfigTool[] = EMBER_BIN_DIR "/ember-config";

std::string ErrorOf(const std::string& json) {
  auto config = ParseVmConfigJson(json, kConfigTool);
  if (!config.ok()) return std::string(config.status().message());
  auto status = ValidateVmConfig(*config);
  return status.ok() ? "" : std::string(status.message());
}

TEST(VmConfig, FirecrackerConfigFileLoadsUnchanged) {
  // Shaped like Firecracker's own example config, minus the devices Ember does not have yet.
  auto config = ParseVmConfigJson(R"({
    "boot-source": {
      "kernel_image_path": "vmlinux.bin",
      "boot_args": "console=ttyS0 reboot=k panic=1 pci=off",
      "initrd_path": null
    },
    "machine-config": {
      "vcpu_count": 2,
      "mem_size_mib": 1024,
      "smt": false,
      "track_dirty_pages": false
    },
    "drives": [],
    "logger": {"log_path": "/tmp/fc.log", "level": "Debug", "show_level": true},
    "metrics": {"metrics_path": "/tmp/fc-metrics"}
  })", kConfigTool);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->boot_source().kernel_image_path(), "vmlinux.bin");
  EXPECT_EQ(config->machine_config().vcpu_count(), 2u);
  EXPECT_EQ(config->machine_config().mem_size_mib(), 1024u);
  EXPECT_EQ(config->logger().level(), "Debug");
  EXPECT_TRUE(config->logger().has_show_level());  // unset would keep Ember's default
  EXPECT_FALSE(config->logger().has_show_log_origin());
  EXPECT_EQ(config->metrics().metrics_path(), "/tmp/fc-metrics");
}

TEST(VmConfig, UnknownFieldIsNamedAsTheFileSpellsIt) {
  EXPECT_EQ(ErrorOf(R"({"machine-config": {"vcpus": 2}})"),
            "(machine-config) vcpus: Cannot find field.");
}

TEST(VmConfig, UnknownSectionIsNamed) {
  EXPECT_EQ(ErrorOf(R"({"ballon": {}})"), "ballon: Cannot find field.");
}

TEST(VmConfig, WrongTypeNamesTheField) {
  EXPECT_NE(ErrorOf(R"({"machine-config": {"vcpu_count": "two"}})")
                .find("machine-config.vcpu_count"),
            std::string::npos);
}

TEST(VmConfig, MalformedJsonIsOneLine) {
  std::string error = ErrorOf(R"({"machine-config": )");
  EXPECT_FALSE(error.empty());
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;
}

TEST(VmConfig, ZeroVcpusIsRejected) {
  EXPECT_EQ(ErrorOf(R"({"machine-config": {"vcpu_count": 0}})"),
            "machine-config.vcpu_count: must be between 1 and 32, got 0");
}

TEST(VmConfig, TooManyVcpusIsRejected) {
  EXPECT_NE(ErrorOf(R"({"machine-config": {"vcpu_count": 33}})").find("vcpu_count"),
            std::string::npos);
}

TEST(VmConfig, ZeroMemoryIsRejected) {
  EXPECT_EQ(ErrorOf(R"({"machine-config": {"mem_size_mib": 0}})"),
            "machine-config.mem_size_mib: must be between 16 and 1048576 MiB, got 0");
}

TEST(VmConfig, AbsurdMemoryIsRejected) {
  EXPECT_NE(ErrorOf(R"({"machine-config": {"mem_size_mib": 4000000000}})").find("mem_size_mib"),
            std::string::npos);
}

TEST(VmConfig, UnknownCpuTemplateIsRejected) {
  EXPECT_NE(ErrorOf(R"({"machine-config": {"cpu_template": "T2"}})").find("cpu_template"),
            std::string::npos);
}

TEST(VmConfig, SmtIsRejected) {
  EXPECT_NE(ErrorOf(R"({"machine-config": {"smt": true}})").find("smt"), std::string::npos);
}

TEST(VmConfig, MissingKernelFileIsNamed) {
  std::string error = ErrorOf(R"({"boot-source": {"kernel_image_path": "/nonexistent/vmlinux"}})");
  EXPECT_NE(error.find("boot-source.kernel_image_path"), std::string::npos) << error;
  EXPECT_NE(error.find("/nonexistent/vmlinux"), std::string::npos) << error;
}

TEST(VmConfig, MissingInitrdFileIsNamed) {
  std::string error = ErrorOf(R"({"boot-source": {"initrd_path": "/nonexistent/initrd"}})");
  EXPECT_NE(error.find("boot-source.initrd_path"), std::string::npos) << error;
}

TEST(VmConfig, NetworkInterfaceAndVsockLoadWithFirecrackersFieldNames) {
  EXPECT_EQ(ErrorOf(R"({"network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                         "guest_mac": "06:00:ac:10:00:02"}],
                        "vsock": {"vsock_id": "vsock0", "guest_cid": 3,
                                  "uds_path": "/tmp/v.sock"}})"),
            "");
}

TEST(VmConfig, NetworkInterfaceWithoutTapIsNamed) {
  EXPECT_EQ(ErrorOf(R"({"network-interfaces": [{"iface_id": "eth0"}]})"),
            "network-interfaces[0].host_dev_name: is required");
}

TEST(VmConfig, NetworkInterfaceWithBadMacIsNamed) {
  EXPECT_NE(ErrorOf(R"({"network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                         "guest_mac": "06:00:zz:10:00:02"}]})")
                .find("network-interfaces[0].guest_mac: "),
            std::string::npos);
}

TEST(VmConfig, TwoInterfacesOnOneTapAreRefused) {
  EXPECT_EQ(ErrorOf(R"({"network-interfaces": [{"iface_id": "a", "host_dev_name": "tap0"},
                                               {"iface_id": "b", "host_dev_name": "tap0"}]})"),
            "network-interfaces[1].host_dev_name: \"tap0\" is used by another interface");
}

TEST(VmConfig, VsockWithReservedCidIsNamed) {
  EXPECT_EQ(ErrorOf(R"({"vsock": {"vsock_id": "v", "guest_cid": 2, "uds_path": "/tmp/v"}})"),
            "vsock.guest_cid: 2 is outside [3, 4294967294]");
}

TEST(VmConfig, VsockWithoutPathOrWithOverlongPathIsNamed) {
  EXPECT_EQ(ErrorOf(R"({"vsock": {"vsock_id": "v", "guest_cid": 3}})"),
            "vsock.uds_path: is required");
  EXPECT_NE(ErrorOf(R"({"vsock": {"vsock_id": "v", "guest_cid": 3, "uds_path": "/)" +
                    std::string(120, 'x') + R"("}})")
                .find("vsock.uds_path: "),
            std::string::npos);
}

TEST(VmConfig, DriveWithoutPathIsNamed) {
  EXPECT_EQ(ErrorOf(R"({"drives": [{"drive_id": "rootfs"}]})"),
            "drives[0].path_on_host: is required");
}

TEST(VmConfig, DriveWithBadIdIsNamed) {
  EXPECT_NE(ErrorOf(R"({"drives": [{"drive_id": "a b", "path_on_host": "/tmp"}]})")
                .find("drives[0].drive_id"),
            std::string::npos);
}

TEST(VmConfig, DriveWithUnknownEngineIsNamed) {
  EXPECT_NE(ErrorOf(R"({"drives": [{"drive_id": "d", "path_on_host": "/x", "io_engine": "Fast"}]})")
                .find("drives[0].io_engine"),
            std::string::npos);
}

TEST(VmConfig, DriveWithUnknownCacheTypeIsNamed) {
  EXPECT_NE(
      ErrorOf(R"({"drives": [{"drive_id": "d", "path_on_host": "/x", "cache_type": "Magic"}]})")
          .find("drives[0].cache_type"),
      std::string::npos);
}

TEST(VmConfig, DrivePartuuidThatWouldAddKernelArgumentsIsNamed) {
  EXPECT_EQ(ErrorOf(R"({"drives": [{"drive_id": "d", "path_on_host": "/x", "is_root_device": true,
                                     "partuuid": "0eaa91a0-01 init=/bin/sh"}]})"),
            "drives[0].partuuid: \"0eaa91a0-01 init=/bin/sh\" is not a partition UUID (hex "
            "digits and '-', at most 36)");
}

TEST(VmConfig, DriveDirectIoReachesTheBlockDevice) {
  const std::string direct = ::testing::TempDir() + "/ember-vm-config-direct.img";
  const std::string cached = ::testing::TempDir() + "/ember-vm-config-cached.img";
  std::ofstream(direct) << std::string(512, '\0');
  std::ofstream(cached) << std::string(512, '\0');
  auto config = ParseVmConfigJson(R"({"drives": [{"drive_id": "d", "path_on_host": ")" + direct +
                                      R"(", "direct_io": true}, {"drive_id": "e",
                                      "path_on_host": ")" + cached + R"(",
                                      "partuuid": "0eaa91a0-01"}]})",
                                  kConfigTool);
  ASSERT_TRUE(config.ok()) << config.status();
  auto drives = DriveConfigs(*config);
  ASSERT_TRUE(drives.ok()) << drives.status();
  ASSERT_EQ(drives->size(), 2u);
  EXPECT_TRUE((*drives)[0].direct_io);
  EXPECT_FALSE((*drives)[1].direct_io);
}

TEST(VmConfig, DuplicateDriveIdsAreRejected) {
  EXPECT_NE(ErrorOf(R"({"drives": [{"drive_id": "d", "path_on_host": "/x"},
                                   {"drive_id": "d", "path_on_host": "/y"}]})")
                .find("drives[1].drive_id"),
            std::string::npos);
}

TEST(VmConfig, TwoRootDrivesAreRejected) {
  EXPECT_NE(ErrorOf(R"({"drives": [{"drive_id": "a", "path_on_host": "/x", "is_root_device": true},
                                   {"drive_id": "b", "path_on_host": "/y", "is_root_device": true}]})")
                .find("is_root_device"),
            std::string::npos);
}

TEST(VmConfig, OneFileAsTwoWritableDrivesIsRejected) {
  std::string image = "/tmp/ember-vm-config-test.img";
  std::ofstream(image) << std::string(512, '\0');
  std::string error = ErrorOf(R"({"drives": [{"drive_id": "a", "path_on_host": ")" + image +
                              R"("}, {"drive_id": "b", "path_on_host": ")" + image + R"("}]})");
  EXPECT_NE(error.find("drives"), std::string::npos) << error;
}

TEST(VmConfig, DriveRefillTimeThatWouldOverflowIsNamed) {
  EXPECT_EQ(ErrorOf(R"({"drives": [{"drive_id": "d", "path_on_host": "/x", "rate_limiter":
                         {"bandwidth": {"size": 1048576, "refill_time": 288230376151711744}}}]})"),
            "drives[0].rate_limiter.bandwidth.refill_time: must be 1 to 3600000 ms when size is "
            "set, got 288230376151711744");
}

TEST(VmConfig, DriveBucketWithSizeButNoRefillTimeIsNamed) {
  EXPECT_EQ(ErrorOf(R"({"drives": [{"drive_id": "d", "path_on_host": "/x",
                                    "rate_limiter": {"ops": {"size": 100}}}]})"),
            "drives[0].rate_limiter.ops.refill_time: must be 1 to 3600000 ms when size is set, "
            "got 0");
}

TEST(VmConfig, NetworkInterfaceBucketAbove2To40IsNamed) {
  EXPECT_NE(ErrorOf(R"({"network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                         "tx_rate_limiter": {"ops": {"size": 1099511627777, "refill_time": 1}}}]})")
                .find("network-interfaces[0].tx_rate_limiter.ops.size: "),
            std::string::npos);
}

TEST(VmConfig, NetworkInterfaceWithLargestLimitsOrSizeZeroIsValid) {
  EXPECT_EQ(ErrorOf(R"({"network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                         "rx_rate_limiter": {"bandwidth": {"size": 1099511627776,
                                                           "one_time_burst": 1099511627776,
                                                           "refill_time": 3600000}},
                         "tx_rate_limiter": {"ops": {"size": 0, "refill_time": 288230376151711744}}
                        }]})"),
            "");
}

TEST(VmConfig, BaselineCpuTemplateIsAccepted) {
  EXPECT_EQ(ErrorOf(R"({"machine-config": {"cpu_template": "baseline"}})"), "");
}

TEST(VmConfig, BadLogLevelIsNamed) {
  EXPECT_NE(ErrorOf(R"({"logger": {"level": "Loud"}})").find("logger.level"), std::string::npos);
}

TEST(VmConfig, VsockWithoutIdAsCurrentFirecrackerWritesItLoads) {
  auto config = ParseVmConfigJson(
      R"({"vsock": {"guest_cid": 3, "uds_path": "/tmp/ember-vm-config-v.sock"}})", kConfigTool);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->vsock().vsock_id(), "vsock");
}

TEST(VmConfig, HtEnabledTrueIsRefusedAsSmt) {
  EXPECT_EQ(ErrorOf(R"({"machine-config": {"vcpu_count": 2, "ht_enabled": true}})"),
            "machine-config.smt: Ember does not support SMT (simultaneous multithreading)");
}

TEST(VmConfig, EmptyConfigIsValid) { EXPECT_EQ(ErrorOf("{}"), ""); }

TEST(VmConfig, MissingConfigFileIsNamed) {
  auto config = LoadVmConfigFile("/nonexistent/vm.json", kConfigTool);
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("/nonexistent/vm.json"), std::string::npos);
}

}  // namespace
}  // namespace ember::vmm
