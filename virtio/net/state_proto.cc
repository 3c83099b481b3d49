#include "virtio/net/state_proto.h"

#include "virtio/rate_limiter_proto.h"

namespace ember::virtio::net {

v1::NetState ToProto(const NetState& state) {
  v1::NetState message;
  *message.mutable_rx_rate_limiter() = virtio::ToProto(state.rx_rate_limiter);
  *message.mutable_tx_rate_limiter() = virtio::ToProto(state.tx_rate_limiter);
  return message;
}

NetState FromProto(const v1::NetState& message) {
  return {virtio::FromProto(message.rx_rate_limiter()),
          virtio::FromProto(message.tx_rate_limiter())};
}

}  // namespace ember::virtio::net
