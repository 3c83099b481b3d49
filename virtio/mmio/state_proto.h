#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/snapshot.pb.h"
#include "virtio/mmio/mmio_transport.h"

namespace ember::virtio {

// A transport's state with its device's (VirtioDeviceSnapshot) and its message, both ways;
// each device's own state goes through the converter in the device's folder.
[[nodiscard]] v1::VirtioDeviceState ToProto(const VirtioDeviceSnapshot& state);
[[nodiscard]] VirtioDeviceSnapshot FromProto(const v1::VirtioDeviceState& message);

// For each of `configured_ids` (the VM's devices, in the order they were built), the index of
// the saved state with that id. InvalidArgument, naming the ids, when a configured device
// has no saved state, when a saved state belongs to no configured device, or when an id is
// saved twice: a snapshot restores into the same set of devices.
[[nodiscard]] absl::StatusOr<std::vector<int>> MatchDeviceStates(
    const std::vector<std::string>& configured_ids,
    const google::protobuf::RepeatedPtrField<v1::VirtioDeviceState>& saved);

}  // namespace ember::virtio
