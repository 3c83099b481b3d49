#pragma once

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/vm_config.pb.h"
#include "virtio/net/config.h"
#include "virtio/vsock/vsock_device.h"
#include "vmm/device_list.h"

namespace ember::vmm {

// Turns the `network-interfaces` of a config that rules::CheckVmConfig accepted (ids, tap
// names, duplicates, rate limits) into net-device configurations, parsing the guest MACs
// ("network-interfaces[1].guest_mac: ..."; one MAC for two interfaces is refused). Whether
// the tap exists is found out by NetDevice::Create when the VM is built.
[[nodiscard]] absl::StatusOr<std::vector<virtio::net::NetConfig>> NetConfigs(
    const v1::VmConfig& config);

// The `vsock` section of such a config, if present. Whether the socket path is free is found
// out by VsockDevice::Create.
[[nodiscard]] std::optional<virtio::vsock::VsockConfig> VsockConfigOf(const v1::VmConfig& config);

// The device list's lines for network interfaces and the vsock (device_list.cc). A tap that
// is missing, busy or forbidden, and a vsock socket path that cannot be bound, are the user's
// input (InvalidArgument naming the field), as a bad MAC is.
[[nodiscard]] absl::Status AddInterfaceSpecs(const v1::VmConfig& config,
                                             std::vector<DeviceSpec>& specs);
[[nodiscard]] absl::Status AddVsockSpec(const v1::VmConfig& config,
                                        std::vector<DeviceSpec>& specs);

}  // namespace ember::vmm
