#include "vmm/net_config.h"

#include <set>
#include <string>

#include "virtio/net/net_device.h"
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

absl::Status AddInterfaceSpecs(const v1::VmConfig& config, std::vector<DeviceSpec>& specs) {
  EMBER_ASSIGN_OR_RETURN(std::vector<virtio::net::NetConfig> nets, NetConfigs(config));
  for (std::size_t i = 0; i < nets.size(); ++i) {
    std::string id = nets[i].iface_id;
    specs.push_back({std::move(id), [i, net = std::move(nets[i])](DeviceIndex& index)
                                        -> absl::StatusOr<std::unique_ptr<virtio::VirtioDevice>> {
      auto device = virtio::net::NetDevice::Create(net);
      if (!device.ok()) {
        return absl::InvalidArgumentError("network-interfaces[" + std::to_string(i) +
                                          "].host_dev_name: " +
                                          std::string(device.status().message()));
      }
      index.interfaces.Add(net.iface_id, device->get());
      return std::unique_ptr<virtio::VirtioDevice>(std::move(*device));
    }});
  }
  return absl::OkStatus();
}

absl::Status AddVsockSpec(const v1::VmConfig& config, std::vector<DeviceSpec>& specs) {
  std::optional<virtio::vsock::VsockConfig> vsock = VsockConfigOf(config);
  if (!vsock) return absl::OkStatus();
  std::string id = vsock->vsock_id;
  specs.push_back({std::move(id), [vsock = std::move(*vsock)](DeviceIndex&)
                                      -> absl::StatusOr<std::unique_ptr<virtio::VirtioDevice>> {
    auto device = virtio::vsock::VsockDevice::Create(vsock);
    if (!device.ok()) {
      // The CID and the path's length were checked with the config: what is left is the
      // path (exists already, no such directory, cannot bind).
      return absl::InvalidArgumentError("vsock.uds_path: " +
                                        std::string(device.status().message()));
    }
    return std::unique_ptr<virtio::VirtioDevice>(std::move(*device));
  }});
  return absl::OkStatus();
}

}  // namespace ember::vmm
