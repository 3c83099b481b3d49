// Clone networks on a real kernel (needs root): namespaces, taps, veth pairs and nftables NAT
// made by the library and checked from outside it (`ip`, `nft`, /proc), in a test host of
// the test's own (world.h) so that counts before and after are exact.
#include "vmm/emberd/clone_network/clone_network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>

#include "tests/clone_network/world.h"
#include "tests/support/files.h"

namespace ember::testing {
namespace {

using emberd::CloneNetwork;
using emberd::CloneNetworkSpec;
using emberd::EgressPool;
using emberd::Ipv4Cidr;

constexpr char kTap[] = "tap0";
constexpr char kTapAddress[] = "172.16.0.1/30";
constexpr char kGuestAddress[] = "172.16.0.2";
constexpr uid_t kCloneUid = 830777;

class CloneNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = EnterTestHost(); !why.empty()) GTEST_SKIP() << why;
    UsePool(false);
  }

  // Clones' egress leases from now on come from a pool that reaches the private ranges or not.
  void UsePool(bool reach_private_ranges) {
    emberd::EgressPoolConfig config{*Ipv4Cidr::Parse("10.213.0.0/24"), "fnnet"};
    config.reach_private_ranges = reach_private_ranges;
    auto pool = EgressPool::Create(std::move(config));
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = std::move(*pool);
  }

  CloneNetworkSpec Spec(bool egress, std::string mount_path = "") {
    CloneNetworkSpec spec;
    spec.tap_name = kTap;
    spec.tap_owner = kCloneUid;
    spec.tap_group = kCloneUid;
    spec.tap_address = *Ipv4Cidr::Parse(kTapAddress);
    if (egress) {
      absl::StatusOr<emberd::EgressLease> lease = pool_->Acquire();
      EXPECT_TRUE(lease.ok()) << lease.status();
      if (lease.ok()) spec.egress.emplace(std::move(*lease));
    }
    spec.mount_path = std::move(mount_path);
    return spec;
  }

  std::unique_ptr<EgressPool> pool_;
};

TEST_F(CloneNetworkTest, TwoClonesSideBySideEachHaveExactlyTheSameTap) {
  const std::set<std::string> host_links = LinkNames();
  absl::StatusOr<CloneNetwork> a = CloneNetwork::Prepare(Spec(false));
  absl::StatusOr<CloneNetwork> b = CloneNetwork::Prepare(Spec(false));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE(NetnsInode(a->netns_fd()), NetnsInode(b->netns_fd()));
  for (const CloneNetwork* clone : {&*a, &*b}) {
    EXPECT_EQ(LinkNames(clone->netns_fd()), (std::set<std::string>{"lo", kTap}));
    ProcessResult details = IpIn(clone->netns_fd(), std::string("-d link show ") + kTap);
    EXPECT_NE(details.out.find("tun type tap"), std::string::npos) << details.out;
    EXPECT_NE(details.out.find("vnet_hdr on persist on user 830777 group 830777"),
              std::string::npos)
        << details.out;
    EXPECT_NE(details.out.find(",UP"), std::string::npos) << details.out;
    ProcessResult addr = IpIn(clone->netns_fd(), std::string("-o -4 addr show dev ") + kTap);
    EXPECT_NE(addr.out.find(std::string("inet ") + kTapAddress), std::string::npos) << addr.out;
  }
  // Nothing of a clone without egress is on the host.
  EXPECT_EQ(LinkNames(), host_links);
}

TEST_F(CloneNetworkTest, InvalidTapNamesAreRefused) {
  for (const char* name : {"", "a-name-of-16-chr", "ta/p", "egress0", "lo"}) {
    CloneNetworkSpec spec = Spec(false);
    spec.tap_name = name;
    absl::StatusOr<CloneNetwork> clone = CloneNetwork::Prepare(std::move(spec));
    ASSERT_FALSE(clone.ok()) << name;
    EXPECT_EQ(clone.status().code(), absl::StatusCode::kInvalidArgument) << clone.status();
  }
}

// A TCP connection from inside namespace `from_netns` to `address`, where a listener in
// `to_netns` waits; returns the address the listener saw it come from ("" when it did not
// arrive within `wait`).
std::string Connect(int from_netns, int to_netns, const std::string& address,
                    std::chrono::milliseconds wait = std::chrono::seconds(5)) {
  base::UniqueFd listener = SocketIn(to_netns, SOCK_STREAM);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(8080);
  inet_pton(AF_INET, address.c_str(), &addr.sin_addr);
  // sockaddr_in is what bind(), connect() and accept() take through their generic pointer.
  auto* generic = reinterpret_cast<sockaddr*>(&addr);
  int one = 1;
  ::setsockopt(listener.Get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  EXPECT_EQ(::bind(listener.Get(), generic, sizeof(addr)), 0)
      << address << ": " << std::strerror(errno);
  EXPECT_EQ(::listen(listener.Get(), 1), 0);
  base::UniqueFd client = SocketIn(from_netns, SOCK_STREAM | SOCK_NONBLOCK);
  if (::connect(client.Get(), generic, sizeof(addr)) != 0 && errno != EINPROGRESS) return "";
  pollfd p{listener.Get(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(wait.count())) != 1) return "";
  sockaddr_in peer{};
  socklen_t length = sizeof(peer);
  base::UniqueFd accepted(
      ::accept4(listener.Get(), reinterpret_cast<sockaddr*>(&peer), &length, SOCK_CLOEXEC));
  if (!accepted) return "";
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &peer.sin_addr, text, sizeof(text));
  return text;
}

// How long a connection that is dropped on its way is given: far longer than one that is let
// through takes (a few hops inside this host), so a missing rule shows.
constexpr std::chrono::milliseconds kDropped{2000};

TEST_F(CloneNetworkTest, EgressReachesTheInternetNamespaceThroughNat) {
  Internet internet;
  absl::StatusOr<CloneNetwork> clone = CloneNetwork::Prepare(Spec(true));
  ASSERT_TRUE(clone.ok()) << clone.status();
  EXPECT_EQ(LinkNames(clone->netns_fd()), (std::set<std::string>{"lo", kTap, "egress0"}));
  // The host masquerades the clone's veth address behind its own address on the uplink.
  EXPECT_EQ(Connect(clone->netns_fd(), internet.netns_fd(), kInternetAddress), kInternetGateway);
}

TEST_F(CloneNetworkTest, EgressDoesNotReachTheHostItself) {
  Internet internet;
  absl::StatusOr<CloneNetwork> clone = CloneNetwork::Prepare(Spec(true));
  ASSERT_TRUE(clone.ok()) << clone.status();
  absl::StatusOr<base::UniqueFd> host = emberd::CurrentNetns();
  ASSERT_TRUE(host.ok()) << host.status();
  ASSERT_EQ(Connect(clone->netns_fd(), internet.netns_fd(), kInternetAddress), kInternetGateway);
  // Neither the host's end of the clone's veth (its gateway) nor another address of the host.
  const std::string gateway = clone->spec().egress->host_address().AddressString();
  EXPECT_EQ(Connect(clone->netns_fd(), host->Get(), gateway, kDropped), "") << gateway;
  EXPECT_EQ(Connect(clone->netns_fd(), host->Get(), kInternetGateway, kDropped), "");
}

// The egress rules are IPv4's: a veth end with an IPv6 link-local address would let the clone
// reach a host service listening on [::] (fe80::...%egress0), past every rule.
TEST_F(CloneNetworkTest, EgressDoesNotReachTheHostOverIpv6LinkLocal) {
  absl::StatusOr<CloneNetwork> clone = CloneNetwork::Prepare(Spec(true));
  ASSERT_TRUE(clone.ok()) << clone.status();
  absl::StatusOr<base::UniqueFd> host = emberd::CurrentNetns();
  ASSERT_TRUE(host.ok()) << host.status();
  // The host end's link-local address as the kernel derives it (EUI-64 of its MAC).
  base::UniqueFd probe = SocketIn(host->Get(), SOCK_DGRAM);
  ifreq ifr{};
  const std::string host_veth = clone->spec().egress->host_veth();
  std::memcpy(ifr.ifr_name, host_veth.data(), std::min(host_veth.size(), sizeof(ifr.ifr_name) - 1));
  ASSERT_EQ(::ioctl(probe.Get(), SIOCGIFHWADDR, &ifr), 0) << std::strerror(errno);
  const auto* mac = reinterpret_cast<const unsigned char*>(ifr.ifr_hwaddr.sa_data);
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_port = htons(8081);
  const unsigned char link_local[16] = {
      0xfe, 0x80, 0, 0, 0, 0, 0, 0, static_cast<unsigned char>(mac[0] ^ 2), mac[1], mac[2],
      0xff, 0xfe, mac[3], mac[4], mac[5]};
  std::memcpy(&addr.sin6_addr, link_local, sizeof(link_local));
  base::UniqueFd listener = SocketIn(host->Get(), SOCK_STREAM, AF_INET6);
  sockaddr_in6 any{};
  any.sin6_family = AF_INET6;
  any.sin6_port = htons(8081);
  // sockaddr_in6 is what bind() and connect() take through their generic pointer.
  ASSERT_EQ(::bind(listener.Get(), reinterpret_cast<sockaddr*>(&any), sizeof(any)), 0)
      << std::strerror(errno);
  ASSERT_EQ(::listen(listener.Get(), 4), 0);
  // The clone's end, by its index in the clone's namespace; tried until the address would have
  // passed duplicate address detection.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  bool reached = false;
  while (!reached && std::chrono::steady_clock::now() < deadline) {
    base::UniqueFd client = SocketIn(clone->netns_fd(), SOCK_STREAM | SOCK_NONBLOCK, AF_INET6);
    ifreq index{};
    std::memcpy(index.ifr_name, emberd::kCloneEgressLink, sizeof(emberd::kCloneEgressLink));
    ASSERT_EQ(::ioctl(client.Get(), SIOCGIFINDEX, &index), 0) << std::strerror(errno);
    addr.sin6_scope_id = static_cast<std::uint32_t>(index.ifr_ifindex);
    if (::connect(client.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 &&
        errno != EINPROGRESS) {
      ::usleep(200'000);
      continue;
    }
    pollfd p{listener.Get(), POLLIN, 0};
    reached = ::poll(&p, 1, 500) == 1;
  }
  EXPECT_FALSE(reached) << "the clone reached the host's [::]:8081 over " << host_veth;
}

TEST_F(CloneNetworkTest, EgressDoesNotReachLinkLocalOrPrivateRanges) {
  Internet internet;
  RoutedNamespace metadata("fnnet-meta", "169.254.0.1", "169.254.169.254", 16);
  RoutedNamespace lan("fnnet-lan", "192.168.77.1", "192.168.77.2", 24);
  RoutedNamespace cgnat("fnnet-cgnat", "100.64.7.1", "100.64.7.2", 24);
  absl::StatusOr<CloneNetwork> clone = CloneNetwork::Prepare(Spec(true));
  ASSERT_TRUE(clone.ok()) << clone.status();
  ASSERT_EQ(Connect(clone->netns_fd(), internet.netns_fd(), kInternetAddress), kInternetGateway);
  EXPECT_EQ(Connect(clone->netns_fd(), metadata.netns_fd(), "169.254.169.254", kDropped), "");
  EXPECT_EQ(Connect(clone->netns_fd(), lan.netns_fd(), "192.168.77.2", kDropped), "");
  EXPECT_EQ(Connect(clone->netns_fd(), cgnat.netns_fd(), "100.64.7.2", kDropped), "");
}

TEST_F(CloneNetworkTest, EgressReachesPrivateRangesOnlyWhenThePoolAllowsIt) {
  UsePool(/*reach_private_ranges=*/true);
  RoutedNamespace metadata("fnnet-meta", "169.254.0.1", "169.254.169.254", 16);
  RoutedNamespace lan("fnnet-lan", "192.168.77.1", "192.168.77.2", 24);
  absl::StatusOr<CloneNetwork> clone = CloneNetwork::Prepare(Spec(true));
  ASSERT_TRUE(clone.ok()) << clone.status();
  absl::StatusOr<base::UniqueFd> host = emberd::CurrentNetns();
  ASSERT_TRUE(host.ok()) << host.status();
  EXPECT_EQ(Connect(clone->netns_fd(), lan.netns_fd(), "192.168.77.2"), "192.168.77.1");
  // Still never the host, link-local or loopback.
  const std::string gateway = clone->spec().egress->host_address().AddressString();
  EXPECT_EQ(Connect(clone->netns_fd(), host->Get(), gateway, kDropped), "") << gateway;
  EXPECT_EQ(Connect(clone->netns_fd(), host->Get(), "192.168.77.1", kDropped), "");
  EXPECT_EQ(Connect(clone->netns_fd(), metadata.netns_fd(), "169.254.169.254", kDropped), "");
}

TEST_F(CloneNetworkTest, EgressDoesNotReachOtherClones) {
  // With private ranges allowed, so that the pool's own subnet (inside 10/8) is what stops it.
  UsePool(/*reach_private_ranges=*/true);
  Internet internet;
  absl::StatusOr<CloneNetwork> a = CloneNetwork::Prepare(Spec(true));
  absl::StatusOr<CloneNetwork> b = CloneNetwork::Prepare(Spec(true));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(Connect(a->netns_fd(), internet.netns_fd(), kInternetAddress), kInternetGateway);
  const std::string other = b->spec().egress->clone_address().AddressString();
  EXPECT_EQ(Connect(a->netns_fd(), b->netns_fd(), other, kDropped), "") << other;
}

TEST_F(CloneNetworkTest, CloneWithoutEgressReachesNothing) {
  Internet internet;
  absl::StatusOr<CloneNetwork> clone = CloneNetwork::Prepare(Spec(false));
  ASSERT_TRUE(clone.ok()) << clone.status();
  EXPECT_EQ(Connect(clone->netns_fd(), internet.netns_fd(), kInternetAddress), "");
}

std::uint16_t Checksum(const std::uint8_t* data, std::size_t length) {
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i + 1 < length; i += 2)
    sum += static_cast<std::uint32_t>(data[i] << 8 | data[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

// What the guest does when it sends: a UDP datagram from the guest's address through the tap
// (opened as ember-vmm opens it, with a virtio-net header), to the tap's own MAC.
void SendAsGuest(int clone_netns, const std::string& payload) {
  absl::StatusOr<emberd::ScopedNetns> inside = emberd::ScopedNetns::Enter(clone_netns);
  ASSERT_TRUE(inside.ok()) << inside.status();
  base::UniqueFd tap(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(tap) << std::strerror(errno);
  ifreq ifr{};
  std::strcpy(ifr.ifr_name, kTap);
  ifr.ifr_flags = static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
  ASSERT_EQ(::ioctl(tap.Get(), TUNSETIFF, &ifr), 0) << std::strerror(errno);
  base::UniqueFd any(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq hw{};
  std::strcpy(hw.ifr_name, kTap);
  ASSERT_EQ(::ioctl(any.Get(), SIOCGIFHWADDR, &hw), 0) << std::strerror(errno);

  std::vector<std::uint8_t> frame(10, 0);  // struct virtio_net_hdr, no offloads
  const std::uint8_t guest_mac[6] = {0x06, 0, 0x0a, 0, 0, 0x02};
  frame.insert(frame.end(), hw.ifr_hwaddr.sa_data, hw.ifr_hwaddr.sa_data + 6);
  frame.insert(frame.end(), guest_mac, guest_mac + 6);
  frame.insert(frame.end(), {0x08, 0x00});
  const std::size_t ip_at = frame.size();
  const auto total = static_cast<std::uint16_t>(20 + 8 + payload.size());
  std::uint8_t ip[20] = {0x45,
                         0,
                         static_cast<std::uint8_t>(total >> 8),
                         static_cast<std::uint8_t>(total),
                         0,
                         1,
                         0x40,
                         0,
                         64,
                         17};
  inet_pton(AF_INET, kGuestAddress, ip + 12);
  inet_pton(AF_INET, kInternetAddress, ip + 16);
  const std::uint16_t ip_sum = Checksum(ip, sizeof(ip));
  ip[10] = static_cast<std::uint8_t>(ip_sum >> 8);
  ip[11] = static_cast<std::uint8_t>(ip_sum);
  frame.insert(frame.end(), ip, ip + sizeof(ip));
  const auto udp_length = static_cast<std::uint16_t>(8 + payload.size());
  // Ports 4000 -> 9999; checksum 0: none, as IPv4 allows.
  frame.insert(frame.end(), {0x0f, 0xa0, 0x27, 0x0f, static_cast<std::uint8_t>(udp_length >> 8),
                             static_cast<std::uint8_t>(udp_length), 0, 0});
  frame.insert(frame.end(), payload.begin(), payload.end());
  ASSERT_GT(frame.size(), ip_at);
  ASSERT_EQ(::write(tap.Get(), frame.data(), frame.size()), static_cast<ssize_t>(frame.size()))
      << std::strerror(errno);
}

TEST_F(CloneNetworkTest, GuestTrafficLeavesWithTheHostsAddress) {
  Internet internet;
  absl::StatusOr<CloneNetwork> clone = CloneNetwork::Prepare(Spec(true));
  ASSERT_TRUE(clone.ok()) << clone.status();
  base::UniqueFd receiver = SocketIn(internet.netns_fd(), SOCK_DGRAM);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(9999);
  // sockaddr_in is what bind() and recvfrom() take through their generic pointer.
  ASSERT_EQ(::bind(receiver.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  SendAsGuest(clone->netns_fd(), "from the guest");
  pollfd p{receiver.Get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1) << "the guest's datagram never reached the internet";
  char buf[64];
  sockaddr_in from{};
  socklen_t length = sizeof(from);
  ssize_t n =
      ::recvfrom(receiver.Get(), buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &length);
  ASSERT_EQ(std::string(buf, static_cast<std::size_t>(std::max<ssize_t>(n, 0))), "from the guest");
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &from.sin_addr, text, sizeof(text));
  EXPECT_STREQ(text, kInternetGateway);  // masqueraded twice: in the clone, then on the host
}

TEST_F(CloneNetworkTest, EgressWithTheHostsForwardingOffIsRefused) {
  auto set_forwarding = [](const char* value) {
    base::UniqueFd fd(::open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(fd && ::write(fd.Get(), value, 1) == 1);
  };
  set_forwarding("0");
  const HostState before = ReadHostState();
  absl::StatusOr<CloneNetwork> clone = CloneNetwork::Prepare(Spec(true));
  set_forwarding("1");
  ASSERT_FALSE(clone.ok());
  EXPECT_EQ(clone.status().code(), absl::StatusCode::kFailedPrecondition) << clone.status();
  EXPECT_NE(clone.status().message().find("net.ipv4.ip_forward"), std::string::npos);
  EXPECT_EQ(ReadHostState(), before);
}

TEST_F(CloneNetworkTest, TeardownLeavesNoNamespaceLinkRuleOrMount) {
  ScopedTempDir dir("fnnet");
  const HostState before = ReadHostState();
  ino_t first_ns = 0;
  ino_t second_ns = 0;
  {
    absl::StatusOr<CloneNetwork> first =
        CloneNetwork::Prepare(Spec(true, dir.path() + "/netns/first"));
    absl::StatusOr<CloneNetwork> second =
        CloneNetwork::Prepare(Spec(true, dir.path() + "/netns/second"));
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_TRUE(second.ok()) << second.status();
    first_ns = NetnsInode(first->netns_fd());
    second_ns = NetnsInode(second->netns_fd());
    // While they live: two host veth ends, two nftables tables, two name mounts.
    const HostState during = ReadHostState();
    EXPECT_EQ(during.links.size(), before.links.size() + 2) << Describe(during);
    EXPECT_NE(during.nft_ruleset.find("table ip " + first->host_nft_table()), std::string::npos);
    EXPECT_NE(during.nft_ruleset.find("table ip " + second->host_nft_table()), std::string::npos);
    EXPECT_EQ(during.nsfs_mounts.size(), before.nsfs_mounts.size() + 2) << Describe(during);
    EXPECT_TRUE(NetnsHeldAnywhere(first_ns));

    // One torn down explicitly, the other by its destructor.
    EXPECT_TRUE(first->Teardown().ok());
    EXPECT_TRUE(first->Teardown().ok());  // again: nothing left to do
  }
  const HostState after = ReadHostState();
  EXPECT_EQ(after, before) << "before:\n" << Describe(before) << "\nafter:\n" << Describe(after);
  EXPECT_FALSE(NetnsHeldAnywhere(first_ns));
  EXPECT_FALSE(NetnsHeldAnywhere(second_ns));
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/netns/first"));
}

TEST_F(CloneNetworkTest, FailedPrepareRemovesWhatItMade) {
  ScopedTempDir dir("fnnet");
  // The pool's first host veth name is taken on the host already: the veth step fails after
  // the namespace, its mount and its tap were made.
  ASSERT_EQ(Ip("link add fnnet0 type veth peer name fnnet0-peer").exit_code, 0);
  const HostState before = ReadHostState();
  absl::StatusOr<CloneNetwork> clone = CloneNetwork::Prepare(Spec(true, dir.path() + "/clone"));
  const HostState after = ReadHostState();
  EXPECT_EQ(Ip("link del fnnet0").exit_code, 0);
  ASSERT_FALSE(clone.ok());
  EXPECT_EQ(clone.status().code(), absl::StatusCode::kAlreadyExists) << clone.status();
  EXPECT_NE(clone.status().message().find("fnnet0"), std::string::npos) << clone.status();
  EXPECT_EQ(after, before) << "before:\n" << Describe(before) << "\nafter:\n" << Describe(after);
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/clone"));
}

TEST_F(CloneNetworkTest, JailerJoinsANamedNamespaceOnly) {
  ScopedTempDir dir("fnnet");
  absl::StatusOr<CloneNetwork> unnamed = CloneNetwork::Prepare(Spec(false));
  ASSERT_TRUE(unnamed.ok()) << unnamed.status();
  EXPECT_EQ(unnamed->JailerArgs().status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string path = dir.path() + "/named";
  absl::StatusOr<CloneNetwork> named = CloneNetwork::Prepare(Spec(false, path));
  ASSERT_TRUE(named.ok()) << named.status();
  absl::StatusOr<std::vector<std::string>> args = named->JailerArgs();
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_EQ(*args, (std::vector<std::string>{"--netns", path}));
  // The mount is the clone's namespace.
  base::UniqueFd by_name(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(by_name) << std::strerror(errno);
  EXPECT_EQ(NetnsInode(by_name.Get()), NetnsInode(named->netns_fd()));
}

}  // namespace
}  // namespace ember::testing
