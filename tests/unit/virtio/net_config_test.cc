#include <gtest/gtest.h>

#include "virtio/net/config.h"
#include "virtio/net/net_device.h"
#include "virtio/net/tap.h"

extern "C" {
extern const unsigned kUapiNetFCsum;
extern const unsigned kUapiNetFGuestCsum;
extern const unsigned kUapiNetFMac;
extern const unsigned kUapiNetFGuestTso4;
extern const unsigned kUapiNetFGuestTso6;
extern const unsigned kUapiNetFGuestUfo;
extern const unsigned kUapiNetFHostTso4;
extern const unsigned kUapiNetFHostTso6;
extern const unsigned kUapiNetFHostUfo;
extern const unsigned kUapiNetFMrgRxbuf;
extern const unsigned kUapiNetFStatus;
extern const unsigned kUapiNetHdrV1Size;
extern const unsigned kUapiNetHdrNumBuffersOffset;
extern const unsigned kUapiNetGsoTcpV4;
extern const unsigned kUapiNetGsoTcpV6;
extern const unsigned kUapiNetGsoUdp;
extern const unsigned kUapiNetFlagNeedsCsum;
extern const unsigned kUapiNetFlagDataValid;
}

namespace ember::virtio::net {
namespace {

TEST(NetConfig, ParsesAMacInEitherCase) {
  auto mac = ParseMac("06:00:AC:10:00:0f");
  ASSERT_TRUE(mac.ok()) << mac.status();
  EXPECT_EQ(*mac, (MacAddress{0x06, 0x00, 0xac, 0x10, 0x00, 0x0f}));
  EXPECT_EQ(FormatMac(*mac), "06:00:ac:10:00:0f");
}

TEST(NetConfig, RejectsMalformedMacsWithTheTextInTheMessage) {
  for (const char* text : {"", "06:00:ac:10:00", "06:00:ac:10:00:0g", "06-00-ac-10-00-02",
                           "06:00:ac:10:00:002", "6:00:ac:10:00:02:"}) {
    auto mac = ParseMac(text);
    ASSERT_FALSE(mac.ok()) << text;
    EXPECT_EQ(mac.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(mac.status().message().find(std::string("\"") + text + "\""), std::string::npos)
        << mac.status();
  }
}

TEST(NetConfig, RejectsAMulticastMac) {
  auto mac = ParseMac("01:00:5e:00:00:01");
  ASSERT_FALSE(mac.ok());
  EXPECT_NE(mac.status().message().find("multicast"), std::string::npos);
}

TEST(NetConfig, ConstantsMatchTheKernelHeaders) {
  EXPECT_EQ(kFeatureCsum, kUapiNetFCsum);
  EXPECT_EQ(kFeatureGuestCsum, kUapiNetFGuestCsum);
  EXPECT_EQ(kFeatureMac, kUapiNetFMac);
  EXPECT_EQ(kFeatureGuestTso4, kUapiNetFGuestTso4);
  EXPECT_EQ(kFeatureGuestTso6, kUapiNetFGuestTso6);
  EXPECT_EQ(kFeatureGuestUfo, kUapiNetFGuestUfo);
  EXPECT_EQ(kFeatureHostTso4, kUapiNetFHostTso4);
  EXPECT_EQ(kFeatureHostTso6, kUapiNetFHostTso6);
  EXPECT_EQ(kFeatureHostUfo, kUapiNetFHostUfo);
  EXPECT_EQ(kFeatureMrgRxbuf, kUapiNetFMrgRxbuf);
  EXPECT_EQ(kFeatureStatus, kUapiNetFStatus);
  EXPECT_EQ(sizeof(VirtioNetHeader), kUapiNetHdrV1Size);
  EXPECT_EQ(offsetof(VirtioNetHeader, num_buffers), kUapiNetHdrNumBuffersOffset);
  EXPECT_EQ(kGsoTcpV4, kUapiNetGsoTcpV4);
  EXPECT_EQ(kGsoTcpV6, kUapiNetGsoTcpV6);
  EXPECT_EQ(kGsoUdp, kUapiNetGsoUdp);
  EXPECT_EQ(kHeaderFlagNeedsCsum, kUapiNetFlagNeedsCsum);
  EXPECT_EQ(kHeaderFlagDataValid, kUapiNetFlagDataValid);
}

TEST(NetConfig, MissingTapIsAClearError) {
  NetConfig config;
  config.iface_id = "eth0";
  config.host_dev_name = "embernotap0";
  auto device = NetDevice::Create(config);
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(device.status().message().find("embernotap0 does not exist"), std::string::npos)
      << device.status();
  EXPECT_NE(device.status().message().find("eth0"), std::string::npos) << device.status();
}

TEST(NetConfig, NonTapInterfaceIsAClearError) {
  auto tap = LinuxTap::Open("lo", LinuxTap::Mode::kExisting);
  ASSERT_FALSE(tap.ok());
  EXPECT_NE(tap.status().message().find("not a tap"), std::string::npos) << tap.status();
}

TEST(NetConfig, OverlongTapNameIsAClearError) {
  auto tap = LinuxTap::Open("a-name-far-too-long-for-linux", LinuxTap::Mode::kCreate);
  ASSERT_FALSE(tap.ok());
  EXPECT_EQ(tap.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ember::virtio::net
