#include "vmm/boot/cmdline.h"

#include <gtest/gtest.h>

#include "vmm/config_loader.h"

namespace ember::vmm {
namespace {

// The JSON goes through the built ember-config, as ember-vmm's --config does.
constexpr char kConfigTool[] = EMBER_BIN_DIR "/ember-config";

v1::VmConfig Parse(const std::string& json) {
  auto config = ParseVmConfigJson(json, kConfigTool);
  EXPECT_TRUE(config.ok()) << config.status();
  return *config;
}

TEST(Cmdline, DefaultsApplyWithoutBootArgs) {
  EXPECT_EQ(AssembleCmdline(Parse("{}"), /*builtin_guest=*/false, ""), kDefaultBootArgs);
}

TEST(Cmdline, BuiltInGuestGetsItsDefaultScenario) {
  EXPECT_EQ(AssembleCmdline(Parse("{}"), /*builtin_guest=*/true, ""),
            std::string(kDefaultBootArgs) + " ember.test=hello");
}

TEST(Cmdline, BootArgsAreKeptVerbatimAndDeviceTokensFollow) {
  auto config = Parse(R"({"boot-source": {"boot_args": "console=ttyS0  quiet"}})");
  EXPECT_EQ(AssembleCmdline(config, false, "virtio_mmio.device=4K@0xd0001000:5"),
            "console=ttyS0  quiet virtio_mmio.device=4K@0xd0001000:5");
}

TEST(Cmdline, EmptyBootArgsMeanNoneNotDefaults) {
  auto config = Parse(R"({"boot-source": {"boot_args": ""}})");
  EXPECT_EQ(AssembleCmdline(config, false, ""), "");
}

TEST(Cmdline, RootDriveAddsRootAndItsMode) {
  auto config = Parse(R"({"boot-source": {"boot_args": "console=ttyS0"},
      "drives": [{"drive_id": "rootfs", "path_on_host": "/x", "is_root_device": true,
                  "is_read_only": true}]})");
  EXPECT_EQ(AssembleCmdline(config, false, "T"), "console=ttyS0 root=/dev/vda ro T");
}

TEST(Cmdline, RootDriveWithPartuuidUsesIt) {
  auto config = Parse(R"({"boot-source": {"boot_args": "a"},
      "drives": [{"drive_id": "rootfs", "path_on_host": "/x", "is_root_device": true,
                  "partuuid": "0eaa91a0-01"}]})");
  EXPECT_EQ(AssembleCmdline(config, false, ""), "a root=PARTUUID=0eaa91a0-01 rw");
}

TEST(Cmdline, LengthLimitIsTheBootProtocols) {
  EXPECT_TRUE(CheckCmdlineLength(std::string(2047, 'x')).ok());
  EXPECT_FALSE(CheckCmdlineLength(std::string(2048, 'x')).ok());
}

}  // namespace
}  // namespace ember::vmm
