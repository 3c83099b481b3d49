#pragma once

#include <cstdint>
#include <optional>

namespace ember::virtio {

// A token bucket's level at a snapshot (ember.v1.TokenBucketState). `size` names the bucket
// the level belongs to: a restore into a bucket of another size (a clone given other limits)
// leaves that bucket full.
struct TokenBucketState {
  std::uint64_t size = 0;
  std::uint64_t budget = 0;
  std::uint64_t one_time_burst = 0;
  std::uint64_t debt = 0;

  friend bool operator==(const TokenBucketState&, const TokenBucketState&) = default;
};

// A rate limiter's buckets at a snapshot (ember.v1.RateLimiterState); nullopt for a bucket the
// limiter did not have.
struct RateLimiterState {
  std::optional<TokenBucketState> bandwidth;
  std::optional<TokenBucketState> ops;

  friend bool operator==(const RateLimiterState&, const RateLimiterState&) = default;
};

}  // namespace ember::virtio
