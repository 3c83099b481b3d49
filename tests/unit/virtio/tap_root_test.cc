// Real taps, in a network namespace of the test's own: needs root (CAP_NET_ADMIN).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "tests/support/netns.h"
#include "virtio/mmio/mmio_transport.h"
#include "virtio/mmio/registers.h"
#include "virtio/net/net_device.h"
#include "virtio/net/tap.h"
#include "virtio/spec.h"
#include "virtio/testing/fake_driver_queue.h"
#include "virtio/testing/fake_mmio_driver.h"
#include "virtio/testing/fake_net.h"

namespace ember::virtio::net {
namespace {

// Moves the test process into a fresh network namespace once, so taps made here vanish with
// it and never touch the host's interfaces. Skips every test without root.
class NetnsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { skip_reason_ = ember::testing::EnterPrivateNetns(); }
  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
  }

  static inline std::string skip_reason_;
};

short InterfaceFlags(const std::string& name) {
  base::UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  EXPECT_EQ(::ioctl(sock.Get(), SIOCGIFFLAGS, &ifr), 0);
  return ifr.ifr_flags;
}

// A persistent tap, as `ip tuntap add` makes one; deleted on destruction.
class PersistentTap {
 public:
  explicit PersistentTap(const std::string& name) : name_(name) { SetPersist(true); }
  ~PersistentTap() { SetPersist(false); }

 private:
  void SetPersist(bool on) {
    base::UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, name_.data(), name_.size());
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    ASSERT_EQ(::ioctl(fd.Get(), TUNSETIFF, &ifr), 0) << std::strerror(errno);
    ASSERT_EQ(::ioctl(fd.Get(), TUNSETPERSIST, on ? 1 : 0), 0);
  }
  std::string name_;
};

TEST_F(NetnsTest, CreateMakesATapThatIsUp) {
  auto tap = LinuxTap::Open("embertap0", LinuxTap::Mode::kCreate);
  ASSERT_TRUE(tap.ok()) << tap.status();
  EXPECT_NE(::if_nametoindex("embertap0"), 0u);
  EXPECT_NE(InterfaceFlags("embertap0") & IFF_UP, 0);
  EXPECT_EQ((*tap)->name(), "embertap0");
  EXPECT_GE(::fcntl((*tap)->fd(), F_GETFL) & O_NONBLOCK, 1);
}

TEST_F(NetnsTest, TapAcceptsEveryOffloadTheDeviceAsksFor) {
  auto tap = LinuxTap::Open("embertap1", LinuxTap::Mode::kCreate);
  ASSERT_TRUE(tap.ok()) << tap.status();
  EXPECT_TRUE((*tap)->SetVnetHeaderSize(12).ok());
  EXPECT_TRUE((*tap)->SetOffloads(0).ok());
  const absl::Status all =
      (*tap)->SetOffloads(kTunOffloadCsum | kTunOffloadTso4 | kTunOffloadTso6 | kTunOffloadUfo);
  EXPECT_TRUE(all.ok()) << all;
}

TEST_F(NetnsTest, ExistingTapIsOpened) {
  PersistentTap persistent("embertap2");
  auto tap = LinuxTap::Open("embertap2", LinuxTap::Mode::kExisting);
  EXPECT_TRUE(tap.ok()) << tap.status();
}

TEST_F(NetnsTest, TapAttachedElsewhereIsBusy) {
  PersistentTap persistent("embertap3");
  auto first = LinuxTap::Open("embertap3", LinuxTap::Mode::kExisting);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = LinuxTap::Open("embertap3", LinuxTap::Mode::kExisting);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("busy"), std::string::npos) << second.status();
}

TEST_F(NetnsTest, MissingTapInExistingModeIsNotFound) {
  auto tap = LinuxTap::Open("embertap9", LinuxTap::Mode::kExisting);
  ASSERT_FALSE(tap.ok());
  EXPECT_EQ(tap.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(NetnsTest, NetDeviceCreateOpensTheConfiguredTap) {
  PersistentTap persistent("embertap4");
  NetConfig config;
  config.iface_id = "eth0";
  config.host_dev_name = "embertap4";
  base::MetricsRegistry metrics;
  auto device = NetDevice::Create(config, metrics);
  EXPECT_TRUE(device.ok()) << device.status();
  auto busy = NetDevice::Create(config, metrics);
  ASSERT_FALSE(busy.ok());
  EXPECT_NE(busy.status().message().find("eth0"), std::string::npos) << busy.status();
}

// The host's IPv4 stack talks to the guest through a real tap and the device: the host's
// ARP request for a guest address reaches the guest's RX ring, and a UDP datagram the guest
// sends reaches a host socket.
TEST_F(NetnsTest, FramesCrossARealTapBothWays) {
  constexpr std::uint64_t kMemSize = 4 << 20;
  base::MetricsRegistry metrics;
  auto memory = base::GuestMemory::Create({{0, kMemSize}}).value();
  testing::FakeDriverQueue rx(memory, 0x1000, 64);
  testing::FakeDriverQueue tx(memory, 0x4000, 64);
  testing::FakeGuestAllocator alloc(0x10000, kMemSize - 0x10000);
  testing::FakeNetDriver guest(memory, rx, tx, alloc);
  NetConfig config;
  config.iface_id = "eth0";
  config.host_dev_name = "embertap5";
  config.create_tap = true;
  config.queue_size = 64;
  auto created = NetDevice::Create(config, metrics);
  ASSERT_TRUE(created.ok()) << created.status();
  NetDevice* device = created->get();
  auto transport = MmioTransport::Create(memory, std::move(created).value(),
                                         base::EventFd::Create().value(), metrics);
  ASSERT_TRUE(transport.ok());
  testing::FakeMmioDriver driver(**transport);
  guest.AddRxBuffers(16, 2048);
  ASSERT_TRUE(driver.Initialize(FeatureBit(kFeatureVersion1) | FeatureBit(kFeatureMrgRxbuf),
                                {rx.layout(), tx.layout()})
                  .ok());

  // Host side: 10.77.0.1/24 on the tap.
  base::UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq ifr{};
  std::strcpy(ifr.ifr_name, "embertap5");
  auto* sin = reinterpret_cast<sockaddr_in*>(&ifr.ifr_addr);
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = htonl(0x0a4d0001);
  ASSERT_EQ(::ioctl(sock.Get(), SIOCSIFADDR, &ifr), 0) << std::strerror(errno);
  sin->sin_addr.s_addr = htonl(0xffffff00);
  ASSERT_EQ(::ioctl(sock.Get(), SIOCSIFNETMASK, &ifr), 0);
  ASSERT_EQ(::ioctl(sock.Get(), SIOCGIFHWADDR, &ifr), 0);
  std::uint8_t host_mac[6];
  std::memcpy(host_mac, ifr.ifr_hwaddr.sa_data, 6);

  // RX: the host resolves 10.77.0.2.
  sockaddr_in guest_addr{};
  guest_addr.sin_family = AF_INET;
  guest_addr.sin_port = htons(9);
  guest_addr.sin_addr.s_addr = htonl(0x0a4d0002);
  ASSERT_EQ(::sendto(sock.Get(), "x", 1, 0, reinterpret_cast<sockaddr*>(&guest_addr),
                     sizeof(guest_addr)),
            1);
  std::optional<std::vector<std::uint8_t>> arp;
  for (int i = 0; i < 200 && !arp; ++i) {
    pollfd pfd{device->EventSources()[0].fd, POLLIN, 0};
    if (::poll(&pfd, 1, 10) == 1) device->EventSources()[0].on_readable();
    while (auto frame = guest.PopRx()) {
      // Ethertype at 12 + 12 (after the virtio-net header); IPv6 chatter may come first.
      if (frame->size() >= 26 && (*frame)[24] == 0x08 && (*frame)[25] == 0x06) arp = frame;
    }
  }
  ASSERT_TRUE(arp.has_value()) << "no ARP request reached the guest";

  // TX: a UDP datagram from 10.77.0.2:7 to 10.77.0.1:5555.
  base::UniqueFd receiver(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in bind_addr{};
  bind_addr.sin_family = AF_INET;
  bind_addr.sin_port = htons(5555);
  bind_addr.sin_addr.s_addr = htonl(0x0a4d0001);
  ASSERT_EQ(::bind(receiver.Get(), reinterpret_cast<sockaddr*>(&bind_addr), sizeof(bind_addr)), 0);
  std::vector<std::uint8_t> frame(12, 0);  // virtio-net header: nothing to offload
  const std::uint8_t guest_mac[6] = {0x06, 0, 0, 0, 0, 2};
  frame.insert(frame.end(), host_mac, host_mac + 6);
  frame.insert(frame.end(), guest_mac, guest_mac + 6);
  frame.insert(frame.end(), {0x08, 0x00});
  const std::string payload = "hello from the guest";
  const auto total = static_cast<std::uint16_t>(20 + 8 + payload.size());
  std::uint8_t ip[20] = {0x45, 0, static_cast<std::uint8_t>(total >> 8),
                         static_cast<std::uint8_t>(total & 0xff), 0, 0, 0x40, 0, 64, 17, 0, 0,
                         10, 77, 0, 2, 10, 77, 0, 1};
  std::uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2) sum += static_cast<std::uint32_t>(ip[i] << 8 | ip[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  ip[10] = static_cast<std::uint8_t>(~sum >> 8);
  ip[11] = static_cast<std::uint8_t>(~sum & 0xff);
  frame.insert(frame.end(), ip, ip + 20);
  const auto udp_len = static_cast<std::uint16_t>(8 + payload.size());
  frame.insert(frame.end(), {0, 7, 0x15, 0xb3, static_cast<std::uint8_t>(udp_len >> 8),
                             static_cast<std::uint8_t>(udp_len & 0xff), 0, 0});
  frame.insert(frame.end(), payload.begin(), payload.end());
  guest.AddTx(frame);
  driver.Write32(mmio::kQueueNotify, 1);
  (*transport)->HandleQueueEvent(1);
  char got[64] = {};
  pollfd pfd{receiver.Get(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 2000), 1) << "the guest's datagram never arrived";
  EXPECT_EQ(::recv(receiver.Get(), got, sizeof(got), 0), static_cast<ssize_t>(payload.size()));
  EXPECT_EQ(std::string(got), payload);
}

}  // namespace
}  // namespace ember::virtio::net
