#pragma once

#include "ember/v1/snapshot.pb.h"
#include "virtio/mmio/mmio_transport.h"

namespace ember::virtio {

// A transport's state with its device's (VirtioDeviceSnapshot) and its message, both ways;
// each device's own state goes through the converter in the device's folder.
[[nodiscard]] v1::VirtioDeviceState ToProto(const VirtioDeviceSnapshot& state);
[[nodiscard]] VirtioDeviceSnapshot FromProto(const v1::VirtioDeviceState& message);

}  // namespace ember::virtio
