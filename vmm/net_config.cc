#include "vmm/net_config.h"

#include <net/if.h>
#include <sys/un.h>

#include <set>
#include <string>

#include "vmm/base/status.h"
#include "vmm/drive_config.h"

namespace ember::vmm {
namespace {

constexpr std::uint64_t kMinGuestCid = 3;
constexpr std::uint64_t kMaxGuestCid = 0xfffffffeull;
// "_<port>" is appended for the per-port listeners the guest connects to.
constexpr std::size_t kMaxUdsPathLength =
    sizeof(sockaddr_un::sun_path) - 1 - (sizeof("_4294967295") - 1);

absl::StatusOr<virtio::net::NetConfig> InterfaceConfig(const v1::NetworkInterface& ni,
                                                       const std::string& where) {
  auto error = [&](const std::string& field, const std::string& problem) {
    return absl::InvalidArgumentError(where + "." + field + ": " + problem);
  };
  virtio::net::NetConfig config;
  if (!ValidDeviceId(ni.iface_id())) {
    return error("iface_id", "\"" + ni.iface_id() + "\" must be 1-64 letters, digits, '_' or '-'");
  }
  config.iface_id = ni.iface_id();
  if (ni.host_dev_name().empty()) return error("host_dev_name", "is required");
  if (ni.host_dev_name().size() >= IFNAMSIZ || ni.host_dev_name().find('/') != std::string::npos) {
    return error("host_dev_name", "\"" + ni.host_dev_name() + "\" is not an interface name (1-" +
                                      std::to_string(IFNAMSIZ - 1) + " characters, no '/')");
  }
  config.host_dev_name = ni.host_dev_name();
  if (!ni.guest_mac().empty()) {
    auto mac = virtio::net::ParseMac(ni.guest_mac());
    if (!mac.ok()) return error("guest_mac", std::string(mac.status().message()));
    config.guest_mac = *mac;
  }
  EMBER_ASSIGN_OR_RETURN(config.rx_rate_limiter,
                         RateLimiterOf(ni.rx_rate_limiter(), where + ".rx_rate_limiter"));
  EMBER_ASSIGN_OR_RETURN(config.tx_rate_limiter,
                         RateLimiterOf(ni.tx_rate_limiter(), where + ".tx_rate_limiter"));
  return config;
}

}  // namespace

absl::StatusOr<std::vector<virtio::net::NetConfig>> NetConfigs(const v1::VmConfig& config) {
  std::vector<virtio::net::NetConfig> nets;
  std::set<std::string> ids;
  std::set<std::string> taps;
  std::set<virtio::net::MacAddress> macs;
  for (int i = 0; i < config.network_interfaces_size(); ++i) {
    const std::string where = "network-interfaces[" + std::to_string(i) + "]";
    auto net = InterfaceConfig(config.network_interfaces(i), where);
    if (!net.ok()) return net.status();
    if (!ids.insert(net->iface_id).second) {
      return absl::InvalidArgumentError(where + ".iface_id: \"" + net->iface_id +
                                        "\" is used by another interface");
    }
    if (!taps.insert(net->host_dev_name).second) {
      return absl::InvalidArgumentError(where + ".host_dev_name: \"" + net->host_dev_name +
                                        "\" is used by another interface");
    }
    if (net->guest_mac && !macs.insert(*net->guest_mac).second) {
      return absl::InvalidArgumentError(where + ".guest_mac: " +
                                        virtio::net::FormatMac(*net->guest_mac) +
                                        " is used by another interface");
    }
    nets.push_back(std::move(*net));
  }
  return nets;
}

absl::StatusOr<std::optional<virtio::vsock::VsockConfig>> VsockConfigOf(
    const v1::VmConfig& config) {
  if (!config.has_vsock()) return std::nullopt;
  const v1::Vsock& v = config.vsock();
  auto error = [](const std::string& field, const std::string& problem) {
    return absl::InvalidArgumentError("vsock." + field + ": " + problem);
  };
  if (!ValidDeviceId(v.vsock_id())) {
    return error("vsock_id", "\"" + v.vsock_id() + "\" must be 1-64 letters, digits, '_' or '-'");
  }
  if (v.guest_cid() < kMinGuestCid || v.guest_cid() > kMaxGuestCid) {
    return error("guest_cid", std::to_string(v.guest_cid()) + " is outside [3, 4294967294]");
  }
  if (v.uds_path().empty()) return error("uds_path", "is required");
  if (v.uds_path().size() > kMaxUdsPathLength) {
    return error("uds_path", "\"" + v.uds_path() + "\" is longer than " +
                                 std::to_string(kMaxUdsPathLength) +
                                 " bytes (a Unix socket path, with room for \"_<port>\")");
  }
  return virtio::vsock::VsockConfig{v.vsock_id(), v.guest_cid(), v.uds_path()};
}

}  // namespace ember::vmm
