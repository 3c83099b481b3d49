#pragma once

#include "virtio/rate_limiter_state.h"

namespace ember::virtio::net {

// What a virtio-net device saves beyond its queues (ember.v1.NetState). Nothing is in flight
// between calls (the tap is read and written synchronously); a frame waiting for RX buffers
// is not saved.
struct NetState {
  RateLimiterState rx_rate_limiter;
  RateLimiterState tx_rate_limiter;

  friend bool operator==(const NetState&, const NetState&) = default;
};

}  // namespace ember::virtio::net
