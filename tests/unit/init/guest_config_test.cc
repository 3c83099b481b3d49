#include "rootfs/init/guest_config.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

namespace ember::init {
namespace {

std::string Dotted(in_addr address) {
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &address, text, sizeof(text));
  return text;
}

TEST(LinuxIp, AllFieldsGiveAddressPrefixGatewayHostnameAndDevice) {
  auto net = ParseLinuxIp("172.16.0.2::172.16.0.1:255.255.255.252:fn-1:eth1:off");
  ASSERT_TRUE(net.ok()) << net.status();
  ASSERT_TRUE(net->has_value());
  const NetSettings& settings = **net;
  EXPECT_EQ(Dotted(settings.address), "172.16.0.2");
  EXPECT_EQ(settings.prefix_length, 30);
  ASSERT_TRUE(settings.gateway);
  EXPECT_EQ(Dotted(*settings.gateway), "172.16.0.1");
  EXPECT_EQ(settings.hostname, "fn-1");
  EXPECT_EQ(settings.device, "eth1");
}

TEST(LinuxIp, EmptyNetmaskIsTheClassMaskAndEmptyDeviceIsEth0) {
  auto net = ParseLinuxIp("10.1.2.3:::::");
  ASSERT_TRUE(net.ok()) << net.status();
  EXPECT_EQ((*net)->prefix_length, 8);
  EXPECT_EQ((*net)->device, "eth0");
  EXPECT_FALSE((*net)->gateway);
  EXPECT_EQ(ParseLinuxIp("192.168.7.9::::::none")->value().prefix_length, 24);
}

TEST(LinuxIp, OffMeansNoConfiguration) {
  auto net = ParseLinuxIp("off");
  ASSERT_TRUE(net.ok());
  EXPECT_FALSE(net->has_value());
}

TEST(LinuxIp, DhcpIsRefusedSayingOnlyStaticSettingsWork) {
  auto net = ParseLinuxIp("dhcp");
  ASSERT_FALSE(net.ok());
  EXPECT_NE(net.status().message().find("only static settings"), std::string::npos);
  EXPECT_FALSE(ParseLinuxIp("10.0.0.2::10.0.0.1:255.0.0.0::eth0:dhcp").ok());
}

TEST(LinuxIp, MalformedFieldsAreRefusedNamingTheField) {
  auto bad_address = ParseLinuxIp("10.0.0.300::::::off");
  ASSERT_FALSE(bad_address.ok());
  EXPECT_NE(bad_address.status().message().find("client address '10.0.0.300'"), std::string::npos);
  auto holey_mask = ParseLinuxIp("10.0.0.2:::255.0.255.0:::");
  ASSERT_FALSE(holey_mask.ok());
  EXPECT_NE(holey_mask.status().message().find("not contiguous"), std::string::npos);
  EXPECT_FALSE(ParseLinuxIp(":::::eth0:off").ok());                  // no client address
  EXPECT_FALSE(ParseLinuxIp("10.0.0.2:::::eth0/x:off").ok());        // device with '/'
  EXPECT_FALSE(ParseLinuxIp("10.0.0.2::::bad_host:eth0:off").ok());  // '_' in hostname
  EXPECT_FALSE(ParseLinuxIp("10.0.0.2::::::::::too:many").ok());     // 11 fields
  EXPECT_FALSE(ParseLinuxIp("240.0.0.1::::::").ok());                // no class mask
}

TEST(EmberIp, AddressPrefixGatewayAndDevice) {
  auto net = ParseEmberIp("192.168.0.2/24,gw=192.168.0.1,dev=eth2");
  ASSERT_TRUE(net.ok()) << net.status();
  EXPECT_EQ(Dotted(net->address), "192.168.0.2");
  EXPECT_EQ(net->prefix_length, 24);
  EXPECT_EQ(Dotted(*net->gateway), "192.168.0.1");
  EXPECT_EQ(net->device, "eth2");
  EXPECT_EQ(ParseEmberIp("10.0.0.2/32")->device, "eth0");
}

TEST(EmberIp, MalformedValuesAreRefused) {
  EXPECT_FALSE(ParseEmberIp("10.0.0.2").ok());
  EXPECT_FALSE(ParseEmberIp("10.0.0.2/33").ok());
  EXPECT_FALSE(ParseEmberIp("10.0.0.2/x").ok());
  EXPECT_FALSE(ParseEmberIp("10.0.0.2/24,gw=nope").ok());
  EXPECT_FALSE(ParseEmberIp("10.0.0.2/24,mtu=1500").ok());
}

TEST(Seed, HexBecomesBytes) {
  auto seed = ParseSeed("00ff7A");
  ASSERT_TRUE(seed.ok());
  EXPECT_EQ(*seed, (std::vector<std::uint8_t>{0x00, 0xff, 0x7a}));
}

TEST(Seed, OddLengthNonHexAndOversizedAreRefused) {
  EXPECT_FALSE(ParseSeed("abc").ok());
  EXPECT_FALSE(ParseSeed("zz").ok());
  EXPECT_FALSE(ParseSeed("").ok());
  EXPECT_TRUE(ParseSeed(std::string(2 * kMaxSeedBytes, 'a')).ok());
  EXPECT_FALSE(ParseSeed(std::string(2 * kMaxSeedBytes + 2, 'a')).ok());
}

TEST(GuestConfig, EmberIpWinsOverIpAndHostnameComesFromIp) {
  GuestConfig config =
      ReadGuestConfig(Cmdline::Parse("ip=10.0.0.5::::vm-a:eth0:off ember.ip=10.9.0.2/16"));
  ASSERT_TRUE(config.net);
  EXPECT_EQ(Dotted(config.net->address), "10.9.0.2");
  EXPECT_EQ(config.hostname, kDefaultHostname);  // ip= was not used
  GuestConfig from_ip = ReadGuestConfig(Cmdline::Parse("ip=10.0.0.5::::vm-a:eth0:off"));
  EXPECT_EQ(from_ip.hostname, "vm-a");
  GuestConfig named =
      ReadGuestConfig(Cmdline::Parse("ip=10.0.0.5::::vm-a:eth0:off ember.hostname=other"));
  EXPECT_EQ(named.hostname, "other");
}

TEST(GuestConfig, BadKeysAreReportedAndTheRestStillApplies) {
  GuestConfig config = ReadGuestConfig(Cmdline::Parse(
      R"(ip=10.0.0.999::::::off ember.seed=xyz ember.hostname=h ember.agent_args="-a  b")"));
  EXPECT_FALSE(config.net);
  EXPECT_TRUE(config.seed.empty());
  EXPECT_EQ(config.hostname, "h");
  EXPECT_EQ(config.agent_args, (std::vector<std::string>{"-a", "b"}));
  ASSERT_EQ(config.errors.size(), 2u);
  EXPECT_TRUE(config.errors[0].starts_with("ip: ")) << config.errors[0];
  EXPECT_TRUE(config.errors[1].starts_with("ember.seed: ")) << config.errors[1];
}

}  // namespace
}  // namespace ember::init
