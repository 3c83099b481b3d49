#pragma once

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/vm_config.pb.h"
#include "virtio/net/config.h"
#include "virtio/vsock/vsock_device.h"

namespace ember::vmm {

// Turns the config's Firecracker-style `network-interfaces` into net-device configurations,
// checking every field that can be checked without touching the host (ids, tap names, MACs,
// duplicates). Errors name the interface and field, e.g.
// "network-interfaces[1].guest_mac: ...". Whether the tap exists is found out by
// NetDevice::Create when the VM is built.
[[nodiscard]] absl::StatusOr<std::vector<virtio::net::NetConfig>> NetConfigs(
    const v1::VmConfig& config);

// The config's `vsock` section, if present, checked likewise ("vsock.guest_cid: ...").
// Whether the socket path is free is found out by VsockDevice::Create.
[[nodiscard]] absl::StatusOr<std::optional<virtio::vsock::VsockConfig>> VsockConfigOf(
    const v1::VmConfig& config);

}  // namespace ember::vmm
