#include "virtio/block/state_proto.h"

#include "virtio/rate_limiter_proto.h"

namespace ember::virtio::block {

v1::BlockState ToProto(const BlockState& state) {
  v1::BlockState message;
  *message.mutable_rate_limiter() = virtio::ToProto(state.rate_limiter);
  return message;
}

BlockState FromProto(const v1::BlockState& message) {
  return {virtio::FromProto(message.rate_limiter())};
}

}  // namespace ember::virtio::block
