#pragma once

#include <string>
#include <variant>

#include "absl/status/statusor.h"

#include "virtio/block/block_state.h"
#include "virtio/net/net_state.h"
#include "virtio/vsock/vsock_state.h"

namespace ember::virtio {

// A device's own state at a snapshot, beyond its transport's registers and queue positions:
// one alternative per device kind (ember.v1.VirtioDeviceState's `device` oneof), monostate for
// a device that saves nothing. A device's State struct lives in its own folder; a new device
// adds one alternative here and one to the oneof.
using DeviceState =
    std::variant<std::monostate, block::BlockState, net::NetState, vsock::VsockState>;

// `state`'s alternative T, for the device named `device` to restore; InvalidArgument when the
// state is another device kind's (or none).
template <typename T>
[[nodiscard]] absl::StatusOr<T> DeviceStateAs(const DeviceState& state, const std::string& device) {
  if (const T* typed = std::get_if<T>(&state)) return *typed;
  return absl::InvalidArgumentError(device + ": the saved device state is of another kind");
}

}  // namespace ember::virtio
