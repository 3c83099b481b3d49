#include "vmm/emberd/clone_network/clone_network.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/emberd/clone_network/nft.h"
#include "vmm/emberd/clone_network/rtnetlink.h"

namespace ember::emberd {
namespace {

constexpr char kIpForward[] = "/proc/sys/net/ipv4/ip_forward";

absl::Status CheckLinkName(const std::string& what, const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ || name == "." || name == ".." ||
      name.find_first_of("/: \t\n") != std::string::npos) {
    return absl::InvalidArgumentError(what + " \"" + name + "\" is not a link name (1-" +
                                      std::to_string(IFNAMSIZ - 1) +
                                      " characters, no '/', ':' or spaces)");
  }
  return absl::OkStatus();
}

// /proc/sys/net belongs to the namespace of the thread that opens it.
absl::StatusOr<bool> ForwardingOn() {
  base::UniqueFd fd(::open(kIpForward, O_RDONLY | O_CLOEXEC));
  if (!fd) return base::ErrnoError("open", kIpForward);
  char value = '0';
  if (::read(fd.Get(), &value, 1) != 1) return base::ErrnoError("read", kIpForward);
  return value != '0';
}

absl::Status TurnOnForwarding() {
  base::UniqueFd fd(::open(kIpForward, O_WRONLY | O_CLOEXEC));
  if (!fd || ::write(fd.Get(), "1", 1) != 1) {
    return base::ErrnoError("turn on IPv4 forwarding", kIpForward);
  }
  return absl::OkStatus();
}

// No IPv6 on link `name` of the calling thread's namespace: the egress rules are IPv4's, and a
// veth end's link-local address would let the clone reach a host service listening on [::]
// (fe80::...%veth). A host without IPv6 has nothing to turn off.
absl::Status DisableIpv6(const std::string& name) {
  const std::string path = "/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6";
  base::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd && errno == ENOENT && ::access("/proc/sys/net/ipv6", F_OK) != 0) {
    return absl::OkStatus();
  }
  if (!fd || ::write(fd.Get(), "1", 1) != 1) return base::ErrnoError("turn off IPv6", path);
  return absl::OkStatus();
}

// A persistent tap in the calling thread's namespace, opened with the flags ember-vmm opens
// it with (virtio/net/tap.cc), owned by `owner`/`group`.
absl::Status MakePersistentTap(const std::string& name, uid_t owner, gid_t group) {
  base::UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!tun) return base::ErrnoError("open", "/dev/net/tun");
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), std::min(name.size(), sizeof(ifr.ifr_name) - 1));
  ifr.ifr_flags = static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
  if (::ioctl(tun.Get(), TUNSETIFF, &ifr) != 0) return base::ErrnoError("TUNSETIFF", name);
  if (::ioctl(tun.Get(), TUNSETOWNER, static_cast<unsigned long>(owner)) != 0) {
    return base::ErrnoError("TUNSETOWNER", name);
  }
  if (::ioctl(tun.Get(), TUNSETGROUP, static_cast<unsigned long>(group)) != 0) {
    return base::ErrnoError("TUNSETGROUP", name);
  }
  if (::ioctl(tun.Get(), TUNSETPERSIST, 1UL) != 0) return base::ErrnoError("TUNSETPERSIST", name);
  return absl::OkStatus();
}

// The host's rules for one clone, in its own table (deleted with the clone). A clone is
// untrusted: it reaches the world beyond the host's uplinks and nothing else. On its way out the
// clone's veth address takes the outgoing link's address, as a real uplink needs (the world has
// no route back to the pool's subnet). It may not open anything on the host itself (any address
// of it, by the input hook: only replies to what the host started come in from the veth), nor
// be forwarded to loopback, link-local (cloud metadata at 169.254.169.254), the pool's subnet
// (other clones) or, unless the pool allows it, the private ranges the host's LANs use.
std::string EgressRules(const std::string& table, const EgressLease& egress) {
  const std::string from_clone = "    iifname \"" + egress.host_veth() + "\" ";
  std::string rules = "table ip " + table + " {\n";
  rules += "  chain postrouting {\n    type nat hook postrouting priority srcnat;\n";
  rules += "    ip saddr " + egress.clone_address().AddressString() + " oifname != \"" +
           egress.host_veth() + "\" masquerade\n  }\n";
  rules += "  chain input {\n    type filter hook input priority filter;\n";
  rules += from_clone + "ct state established,related accept\n";
  rules += from_clone + "drop\n  }\n";
  rules += "  chain forward {\n    type filter hook forward priority filter;\n";
  // Loopback, link-local, "this network", IETF protocol assignments, benchmarking, multicast
  // and reserved: none is the world's.
  rules += from_clone +
           "ip daddr { 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 192.0.0.0/24, 198.18.0.0/15, "
           "224.0.0.0/4, 240.0.0.0/4 } drop\n";
  // A rule of its own: an anonymous set may not hold overlapping ranges, and the pool's subnet
  // may lie inside 10/8.
  rules += from_clone + "ip daddr " + egress.pool_config().subnet.ToString() + " drop\n";
  if (!egress.pool_config().reach_private_ranges) {
    rules +=
        from_clone + "ip daddr { 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10 } drop\n";
  }
  return rules + "  }\n}\n";
}

}  // namespace

// nftables identifiers: the host veth's name with anything but letters, digits and '_' as '_'.
std::string EgressTableName(const std::string& host_veth) {
  std::string name = "ember_" + host_veth;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

CloneNetwork::CloneNetwork(CloneNetwork&& other) noexcept
    : spec_(std::move(other.spec_)),
      netns_(std::move(other.netns_)),
      mounted_(std::exchange(other.mounted_, false)),
      tap_made_(std::exchange(other.tap_made_, false)),
      veth_made_(std::exchange(other.veth_made_, false)),
      host_nft_table_(std::exchange(other.host_nft_table_, {})) {}

absl::StatusOr<CloneNetwork> CloneNetwork::Prepare(CloneNetworkSpec spec) {
  EMBER_RETURN_IF_ERROR(CheckLinkName("tap name", spec.tap_name));
  if (spec.tap_name == kCloneEgressLink || spec.tap_name == "lo") {
    return absl::InvalidArgumentError("tap name \"" + spec.tap_name +
                                      "\" is taken in a clone's namespace");
  }
  if (spec.egress) {
    EMBER_RETURN_IF_ERROR(CheckLinkName("egress veth", spec.egress->host_veth()));
    EMBER_ASSIGN_OR_RETURN(bool forwarding, ForwardingOn());
    if (!forwarding) {
      return absl::FailedPreconditionError(
          "a clone's egress needs the host's IPv4 forwarding on (sysctl net.ipv4.ip_forward=1)");
    }
  }
  CloneNetwork network(std::move(spec));
  EMBER_ASSIGN_OR_RETURN(network.netns_, NewNetns());
  if (!network.spec_.mount_path.empty()) {
    EMBER_RETURN_IF_ERROR(NameNetns(network.netns_.Get(), network.spec_.mount_path));
    network.mounted_ = true;
  }
  // On an error `network`'s destructor removes what was made.
  EMBER_RETURN_IF_ERROR(network.BuildInside());
  if (network.spec_.egress) EMBER_RETURN_IF_ERROR(network.BuildEgress());
  return network;
}

absl::Status CloneNetwork::BuildInside() {
  EMBER_ASSIGN_OR_RETURN(ScopedNetns inside, Enter());
  EMBER_ASSIGN_OR_RETURN(RtNetlink netlink, RtNetlink::Open());
  EMBER_RETURN_IF_ERROR(netlink.SetUp("lo"));
  EMBER_RETURN_IF_ERROR(
      MakePersistentTap(spec_.tap_name, spec_.tap_owner.value_or(0), spec_.tap_group.value_or(0)));
  tap_made_ = true;
  if (spec_.tap_address)
    EMBER_RETURN_IF_ERROR(netlink.AddAddress(spec_.tap_name, *spec_.tap_address));
  EMBER_RETURN_IF_ERROR(netlink.SetUp(spec_.tap_name));
  if (spec_.egress) {
    // The guest's packets are forwarded from the tap to the veth, leaving with the clone's
    // veth address: every clone's guest has the same address, the host must tell them apart.
    EMBER_RETURN_IF_ERROR(TurnOnForwarding());
    EMBER_RETURN_IF_ERROR(RunNft(std::string("table ip ember_clone {\n"
                                             "  chain postrouting {\n"
                                             "    type nat hook postrouting priority srcnat;\n"
                                             "    oifname \"") +
                                 kCloneEgressLink + "\" masquerade\n  }\n}\n")
                              .status());
  }
  return absl::OkStatus();
}

absl::Status CloneNetwork::BuildEgress() {
  const EgressLease& egress = *spec_.egress;
  EMBER_ASSIGN_OR_RETURN(RtNetlink host, RtNetlink::Open());
  EMBER_RETURN_IF_ERROR(host.CreateVethPair(egress.host_veth(), kCloneEgressLink, netns_.Get()));
  veth_made_ = true;
  EMBER_RETURN_IF_ERROR(DisableIpv6(egress.host_veth()));
  EMBER_RETURN_IF_ERROR(host.AddAddress(egress.host_veth(), egress.host_address()));
  EMBER_RETURN_IF_ERROR(host.SetUp(egress.host_veth()));
  {
    EMBER_ASSIGN_OR_RETURN(ScopedNetns inside, Enter());
    EMBER_ASSIGN_OR_RETURN(RtNetlink netlink, RtNetlink::Open());
    EMBER_RETURN_IF_ERROR(DisableIpv6(kCloneEgressLink));
    EMBER_RETURN_IF_ERROR(netlink.AddAddress(kCloneEgressLink, egress.clone_address()));
    EMBER_RETURN_IF_ERROR(netlink.SetUp(kCloneEgressLink));
    EMBER_RETURN_IF_ERROR(netlink.AddDefaultRoute(egress.host_address().address));
  }
  const std::string table = EgressTableName(egress.host_veth());
  EMBER_RETURN_IF_ERROR(RunNft(EgressRules(table, egress)).status());
  host_nft_table_ = table;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> CloneNetwork::JailerArgs() const {
  if (!mounted_) {
    return absl::FailedPreconditionError(
        "clone network with tap " + spec_.tap_name +
        " has no mount path: ember-jailer joins a network namespace by name");
  }
  return std::vector<std::string>{"--netns", spec_.mount_path};
}

absl::Status CloneNetwork::Teardown() {
  absl::Status first;
  auto keep = [&first](absl::Status status) {
    if (first.ok()) first = std::move(status);
  };
  if (!host_nft_table_.empty()) {
    keep(RunNft("delete table ip " + host_nft_table_).status());
    if (first.ok()) host_nft_table_.clear();
  }
  if (veth_made_) {
    // Deleting the host's end takes the clone's end with it.
    absl::StatusOr<RtNetlink> host = RtNetlink::Open();
    absl::Status deleted = host.ok() ? host->DeleteLink(spec_.egress->host_veth()) : host.status();
    if (deleted.ok() || absl::IsNotFound(deleted)) {
      veth_made_ = false;
    } else {
      keep(deleted);
    }
  }
  if (tap_made_ && netns_) {
    // Persistent taps go with their namespace, but a VMM still inside would keep it (and the
    // tap) alive: the tap is deleted now.
    absl::Status deleted = [&]() -> absl::Status {
      EMBER_ASSIGN_OR_RETURN(ScopedNetns inside, Enter());
      EMBER_ASSIGN_OR_RETURN(RtNetlink netlink, RtNetlink::Open());
      return netlink.DeleteLink(spec_.tap_name);
    }();
    if (deleted.ok() || absl::IsNotFound(deleted)) {
      tap_made_ = false;
    } else {
      keep(deleted);
    }
  }
  if (mounted_) {
    absl::Status unnamed = UnnameNetns(spec_.mount_path);
    if (unnamed.ok()) mounted_ = false;
    keep(unnamed);
  }
  if (first.ok()) {
    netns_.Reset();
    spec_.egress.reset();  // the lease's slot is free again
  }
  return first;
}

CloneNetwork::~CloneNetwork() {
  if (absl::Status status = Teardown(); !status.ok()) {
    EMBER_LOG(kError) << "clone network with tap " << spec_.tap_name
                      << " not wholly removed: " << status;
  }
}

}  // namespace ember::emberd
