// The test guest's virtio-net driver against ember-vmm's net device on real KVM and a real tap,
// in a network namespace of the test's own (needs root): the host pings the guest and sends it
// UDP datagrams, and checks the answers.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "tests/support/kvm_available.h"
#include "tests/support/netns.h"
#include "tests/support/process.h"
#include "vmm/base/unique_fd.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

constexpr char kTap[] = "embertap0";
constexpr char kHostIp[] = "10.0.0.1";
constexpr char kGuestIp[] = "10.0.0.2";
constexpr char kGuestMac[] = "06:00:0a:00:00:02";

// iproute2's `ip`, by absolute path (Process does not search PATH).
std::string IpPath() {
  for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(path, X_OK) == 0) return path;
  }
  return "ip";
}

ProcessResult Ip(const std::string& args) {
  std::vector<std::string> argv{IpPath()};
  std::size_t start = 0;
  while (start < args.size()) {
    std::size_t end = args.find(' ', start);
    if (end == std::string::npos) end = args.size();
    argv.push_back(args.substr(start, end - start));
    start = end + 1;
  }
  return RunProcess(argv, seconds(10));
}

std::string NetConfig(const std::string& tap, const std::string& mac) {
  return WriteTempFile(
      "vm.json", std::string(R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=net ember.net=)") +
                     kGuestIp + R"(/24"}, "network-interfaces": [{"iface_id": "eth0",
                     "host_dev_name": ")" + tap + R"(", "guest_mac": ")" + mac + R"("}]})");
}

// Moves the test process into a fresh network namespace once (so ember-vmm, its child, finds
// the tap there and nothing touches the host's interfaces), and gives each test a tap with
// the host's address on it. Skips without root.
class NetGuest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    skip_reason_ = EnterPrivateNetns();
    if (skip_reason_.empty()) (void)Ip("link set lo up");
  }
  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    EMBER_REQUIRE_KVM();
    for (const std::string& args :
         {std::string("tuntap add dev ") + kTap + " mode tap",
          std::string("addr add ") + kHostIp + "/24 dev " + kTap,
          std::string("link set ") + kTap + " up"}) {
      ProcessResult r = Ip(args);
      ASSERT_EQ(r.exit_code, 0) << "ip " << args << ": " << r.err;
    }
    made_tap_ = true;
  }
  void TearDown() override {
    if (made_tap_) {
      EXPECT_EQ(Ip(std::string("link del ") + kTap).exit_code, 0);
    }
  }

  static inline std::string skip_reason_;
  bool made_tap_ = false;
};

sockaddr_in GuestAddress(std::uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, kGuestIp, &addr.sin_addr);
  return addr;
}

bool Readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

// Sends `text` to the guest's UDP echo port and returns what comes back ("" on timeout).
std::string UdpEcho(int sock, const std::string& text) {
  sockaddr_in to = GuestAddress(7);
  // sockaddr_in is what sendto() takes through its generic pointer.
  EXPECT_EQ(::sendto(sock, text.data(), text.size(), 0, reinterpret_cast<sockaddr*>(&to),
                     sizeof(to)),
            static_cast<ssize_t>(text.size()))
      << std::strerror(errno);
  if (!Readable(sock, 30'000)) return "";
  char buf[256];
  ssize_t n = ::recv(sock, buf, sizeof(buf), 0);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
}

std::uint16_t InetChecksum(const std::uint8_t* data, std::size_t len) {
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i + 1 < len; i += 2) sum += static_cast<std::uint32_t>(data[i] << 8 | data[i + 1]);
  if (len % 2) sum += static_cast<std::uint32_t>(data[len - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

// One ICMP echo to the guest over a raw socket; true when its reply (same id and sequence,
// same payload) arrives.
bool Ping(int raw, std::uint16_t seq) {
  std::uint8_t packet[8 + 16] = {ICMP_ECHO, 0, 0, 0, 0x12, 0x34,
                                 static_cast<std::uint8_t>(seq >> 8), static_cast<std::uint8_t>(seq)};
  std::memcpy(packet + 8, "ember ping data.", 16);
  std::uint16_t csum = InetChecksum(packet, sizeof(packet));
  packet[2] = static_cast<std::uint8_t>(csum >> 8);
  packet[3] = static_cast<std::uint8_t>(csum);
  sockaddr_in to = GuestAddress(0);
  if (::sendto(raw, packet, sizeof(packet), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)) !=
      static_cast<ssize_t>(sizeof(packet))) {
    return false;
  }
  while (Readable(raw, 30'000)) {
    std::uint8_t buf[256];
    ssize_t n = ::recv(raw, buf, sizeof(buf), 0);
    if (n < 20) continue;
    std::size_t ihl = (buf[0] & 0xfu) * 4u;
    if (static_cast<std::size_t>(n) != ihl + sizeof(packet)) continue;
    const std::uint8_t* icmp = buf + ihl;
    if (icmp[0] == ICMP_ECHOREPLY && icmp[4] == 0x12 && icmp[5] == 0x34 &&
        icmp[6] == packet[6] && icmp[7] == packet[7]) {
      return std::memcmp(icmp + 8, packet + 8, 16) == 0 && InetChecksum(icmp, sizeof(packet)) == 0;
    }
  }
  return false;
}

TEST_F(NetGuest, GuestAnswersArpPingAndUdpEchoUntilQuit) {
  Process vmm({BinPath("ember-vmm"), "--config", NetConfig(kTap, kGuestMac)});
  ASSERT_TRUE(vmm.WaitForOutput("net: ready", seconds(60)));

  base::UniqueFd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  for (int i = 0; i < 3; ++i) {
    const std::string text = "datagram " + std::to_string(i);
    EXPECT_EQ(UdpEcho(udp.Get(), text), text);
  }
  base::UniqueFd raw(::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP));
  ASSERT_GE(raw.Get(), 0) << std::strerror(errno);
  for (std::uint16_t seq = 1; seq <= 3; ++seq) EXPECT_TRUE(Ping(raw.Get(), seq)) << "echo " << seq;
  // The guest answered ARP with the configured MAC.
  ProcessResult neigh = Ip(std::string("neigh show ") + kGuestIp + " dev " + kTap);
  EXPECT_NE(neigh.out.find(kGuestMac), std::string::npos) << neigh.out;

  sockaddr_in to = GuestAddress(7);
  ASSERT_EQ(::sendto(udp.Get(), "quit", 4, 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 4);
  ProcessResult result = vmm.Wait(seconds(60));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find(std::string("mac ") + kGuestMac), std::string::npos) << result.out;
  EXPECT_NE(result.out.find(" ARP, 3 ICMP, 3 UDP\nPASS net\n"), std::string::npos)
      << result.out << result.err;
}

// Config errors: one line on stderr naming the field, exit code 2.
void ExpectBadInput(const ProcessResult& result, const std::string& prefix) {
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_EQ(result.err.rfind("ember-vmm: error: " + prefix, 0), 0u) << result.err;
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
}

TEST_F(NetGuest, MissingTapIsRefused) {
  ProcessResult result =
      RunProcess({BinPath("ember-vmm"), "--config", NetConfig("nosuchtap", kGuestMac)});
  ExpectBadInput(result, "network-interfaces[0].host_dev_name: ");
  EXPECT_NE(result.err.find("nosuchtap"), std::string::npos) << result.err;
}

TEST_F(NetGuest, TapAnotherProcessHoldsIsRefused) {
  base::UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  ASSERT_GE(tun.Get(), 0) << std::strerror(errno);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, kTap, IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  ASSERT_EQ(::ioctl(tun.Get(), TUNSETIFF, &ifr), 0) << std::strerror(errno);

  ProcessResult result = RunProcess({BinPath("ember-vmm"), "--config", NetConfig(kTap, kGuestMac)});

  ExpectBadInput(result, "network-interfaces[0].host_dev_name: ");
}

TEST(NetConfigErrors, BadMacIsRefused) {
  ProcessResult result =
      RunProcess({BinPath("ember-vmm"), "--config", NetConfig(kTap, "06:00:zz:00:00:02")});
  ExpectBadInput(result, "network-interfaces[0].guest_mac: ");
}

TEST(NetConfigErrors, CloneOverridesWithoutRestoreAreRefused) {
  for (const char* flag : {"--net-override", "--vsock-override"}) {
    ProcessResult result = RunProcess({BinPath("ember-vmm"), flag, "eth0=tap9"});
    EXPECT_EQ(result.exit_code, 2) << flag;
    EXPECT_NE(result.err.find("need --restore-from"), std::string::npos) << result.err;
  }
}

}  // namespace
}  // namespace ember::testing
