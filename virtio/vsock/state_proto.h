#pragma once

#include "ember/v1/snapshot.pb.h"
#include "virtio/vsock/vsock_state.h"

namespace ember::virtio::vsock {

// VsockState and its message (the snapshot's encoding), both ways.
[[nodiscard]] v1::VsockState ToProto(const VsockState& state);
[[nodiscard]] VsockState FromProto(const v1::VsockState& message);

}  // namespace ember::virtio::vsock
