#pragma once

#include "ember/v1/snapshot.pb.h"
#include "virtio/block/block_state.h"

namespace ember::virtio::block {

// BlockState and its message (the snapshot's encoding), both ways.
[[nodiscard]] v1::BlockState ToProto(const BlockState& state);
[[nodiscard]] BlockState FromProto(const v1::BlockState& message);

}  // namespace ember::virtio::block
