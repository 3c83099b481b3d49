#pragma once

#include "ember/v1/snapshot.pb.h"
#include "virtio/net/net_state.h"

namespace ember::virtio::net {

// NetState and its message (the snapshot's encoding), both ways.
[[nodiscard]] v1::NetState ToProto(const NetState& state);
[[nodiscard]] NetState FromProto(const v1::NetState& message);

}  // namespace ember::virtio::net
