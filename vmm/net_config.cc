#include "vmm/net_config.h"

#include <set>
#include <string>

#include "vmm/base/status.h"
#include "vmm/drive_config.h"

namespace ember::vmm {

absl::StatusOr<std::vector<virtio::net::NetConfig>> NetConfigs(const v1::VmConfig& config) {
  std::vector<virtio::net::NetConfig> nets;
  std::set<virtio::net::MacAddress> macs;
  for (int i = 0; i < config.network_interfaces_size(); ++i) {
    const v1::NetworkInterface& ni = config.network_interfaces(i);
    const std::string where = "network-interfaces[" + std::to_string(i) + "]";
    virtio::net::NetConfig net;
    net.iface_id = ni.iface_id();
    net.host_dev_name = ni.host_dev_name();
    if (!ni.guest_mac().empty()) {
      auto mac = virtio::net::ParseMac(ni.guest_mac());
      if (!mac.ok()) {
        return absl::InvalidArgumentError(where + ".guest_mac: " +
                                          std::string(mac.status().message()));
      }
      if (!macs.insert(*mac).second) {
        return absl::InvalidArgumentError(where + ".guest_mac: " + virtio::net::FormatMac(*mac) +
                                          " is used by another interface");
      }
      net.guest_mac = *mac;
    }
    EMBER_ASSIGN_OR_RETURN(net.rx_rate_limiter,
                           RateLimiterOf(ni.rx_rate_limiter(), where + ".rx_rate_limiter"));
    EMBER_ASSIGN_OR_RETURN(net.tx_rate_limiter,
                           RateLimiterOf(ni.tx_rate_limiter(), where + ".tx_rate_limiter"));
    nets.push_back(std::move(net));
  }
  return nets;
}

std::optional<virtio::vsock::VsockConfig> VsockConfigOf(const v1::VmConfig& config) {
  if (!config.has_vsock()) return std::nullopt;
  const v1::Vsock& v = config.vsock();
  return virtio::vsock::VsockConfig{v.vsock_id(), v.guest_cid(), v.uds_path()};
}

}  // namespace ember::vmm
