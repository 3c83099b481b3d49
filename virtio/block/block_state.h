#pragma once

#include "virtio/rate_limiter_state.h"

namespace ember::virtio::block {

// What a virtio-blk device saves beyond its queues (ember.v1.BlockState). The drive itself
// (path, engine, limits) comes from the VM config, and after Quiesce nothing is in flight.
struct BlockState {
  // So that a restored guest does not get a fresh burst.
  RateLimiterState rate_limiter;

  friend bool operator==(const BlockState&, const BlockState&) = default;
};

}  // namespace ember::virtio::block
