// The test guest boots from a config file with every drive, network, vsock, logger and
// metrics option Firecracker's format has (tests/data/firecracker/vm_config_every_option.json).
// Root: the interface needs a tap, made in a network namespace of the test's own.
#include <gtest/gtest.h>
#include <unistd.h>

#include "tests/integration/firecracker_dir.h"
#include "tests/support/kvm_available.h"
#include "tests/support/netns.h"

namespace ember::testing {
namespace {

// iproute2's `ip`, by absolute path (Process does not search PATH).
std::string IpPath() {
  for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(path, X_OK) == 0) return path;
  }
  return "ip";
}

std::size_t CountOf(const std::string& text, const std::string& what) {
  std::size_t count = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++count;
  }
  return count;
}

TEST(FirecrackerConfigNet, FileWithEveryDeviceOptionBootsWithAllItsDevices) {
  if (std::string reason = EnterPrivateNetns(); !reason.empty()) GTEST_SKIP() << reason;
  EMBER_REQUIRE_KVM();
  ProcessResult tap = RunProcess({IpPath(), "tuntap", "add", "dev", "tap-fc0", "mode", "tap"});
  ASSERT_EQ(tap.exit_code, 0) << tap.err;
  FirecrackerDir dir("vm_config_every_option.json");

  ProcessResult result = dir.RunVmm();

  EXPECT_EQ(result.exit_code, 0) << result.err;
  std::size_t line = result.out.find("Command line: ");
  ASSERT_NE(line, std::string::npos) << result.out;
  std::string cmdline = result.out.substr(line, result.out.find('\n', line) - line);
  EXPECT_NE(cmdline.find(" root=PARTUUID=7c9e6679-7425-40de-944b-e07fc1f90ae7 rw "),
            std::string::npos)
      << cmdline;
  EXPECT_EQ(CountOf(cmdline, "virtio_mmio.device="), 4u) << cmdline;  // 2 drives, net, vsock
  EXPECT_NE(result.out.find("\nPASS hello\n"), std::string::npos) << result.out;
  EXPECT_FALSE(ReadFile(dir.Path("vmm.metrics")).empty());
  EXPECT_EQ(RunProcess({IpPath(), "link", "del", "tap-fc0"}).exit_code, 0);
}

}  // namespace
}  // namespace ember::testing
