#pragma once

#include "ember/v1/snapshot.pb.h"
#include "virtio/rate_limiter_state.h"

namespace ember::virtio {

// RateLimiterState and its message (the snapshot's encoding), both ways. Any message reads:
// what it holds is checked against the configured buckets on restore.
[[nodiscard]] v1::RateLimiterState ToProto(const RateLimiterState& state);
[[nodiscard]] RateLimiterState FromProto(const v1::RateLimiterState& message);

}  // namespace ember::virtio
