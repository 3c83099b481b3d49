// The container's tap (vmm/runtime/tap_device.h) in a network namespace of the test's own, as
// CNI makes a pod's. Needs root.
#include "vmm/runtime/tap_device.h"

#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "tests/support/process.h"

namespace ember::runtime {
namespace {

using ember::testing::RunProcess;

class TapDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: network namespaces and taps";
    made_ = RunProcess({"/usr/sbin/ip", "netns", "add", name_}).exit_code == 0;
    ASSERT_TRUE(made_);
  }
  void TearDown() override {
    if (made_) (void)RunProcess({"/usr/sbin/ip", "netns", "del", name_});
  }

  std::string path() const { return "/var/run/netns/" + name_; }
  bool HasLink(const std::string& link) const {
    return RunProcess({"/usr/sbin/ip", "-n", name_, "link", "show", link}).exit_code == 0;
  }

  std::string name_ = "ember-tap-" + std::to_string(::getpid());
  bool made_ = false;
};

TEST_F(TapDeviceTest, CreateMakesAPersistentTapThatIsUpAndDeleteRemovesIt) {
  ASSERT_TRUE(CreateTap(path(), "ember0").ok());
  ASSERT_TRUE(HasLink("ember0"));
  std::string shown = RunProcess({"/usr/sbin/ip", "-n", name_, "-o", "link", "show", "ember0"}).out;
  EXPECT_NE(shown.find("UP"), std::string::npos) << shown;
  ASSERT_TRUE(DeleteTap(path(), "ember0").ok());
  EXPECT_FALSE(HasLink("ember0"));
}

// A tap made persistent that then cannot be brought up must not stay: the caller takes the
// failure for no tap and would never remove it. Without CAP_NET_ADMIN (but with CAP_SYS_ADMIN to
// enter the namespace) TUNSETIFF and TUNSETPERSIST still work on an existing tap of no owner,
// while SIOCSIFFLAGS is refused: the step after TUNSETPERSIST fails for real.
TEST_F(TapDeviceTest, ATapThatCannotBeBroughtUpIsNotLeftPersistent) {
  ASSERT_EQ(RunProcess({"/usr/sbin/ip", "-n", name_, "tuntap", "add", "dev", "ember0", "mode",
                        "tap", "vnet_hdr"})
                .exit_code,
            0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    if (::syscall(SYS_capget, &header, data) != 0) ::_exit(2);
    data[CAP_NET_ADMIN / 32].effective &= ~(1U << (CAP_NET_ADMIN % 32));
    if (::syscall(SYS_capset, &header, data) != 0) ::_exit(2);
    absl::Status created = CreateTap(path(), "ember0");
    ::_exit(created.ok() ? 1 : 0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0) << "CreateTap did not fail without CAP_NET_ADMIN";
  EXPECT_FALSE(HasLink("ember0"));
}

}  // namespace
}  // namespace ember::runtime
