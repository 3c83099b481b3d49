#include "virtio/rate_limiter_proto.h"

namespace ember::virtio {
namespace {

void PutBucket(const std::optional<TokenBucketState>& bucket, v1::TokenBucketState* out) {
  out->set_size(bucket->size);
  out->set_budget(bucket->budget);
  out->set_one_time_burst(bucket->one_time_burst);
  out->set_debt(bucket->debt);
}

TokenBucketState GetBucket(const v1::TokenBucketState& in) {
  return {in.size(), in.budget(), in.one_time_burst(), in.debt()};
}

}  // namespace

v1::RateLimiterState ToProto(const RateLimiterState& state) {
  v1::RateLimiterState message;
  if (state.bandwidth) PutBucket(state.bandwidth, message.mutable_bandwidth());
  if (state.ops) PutBucket(state.ops, message.mutable_ops());
  return message;
}

RateLimiterState FromProto(const v1::RateLimiterState& message) {
  RateLimiterState state;
  if (message.has_bandwidth()) state.bandwidth = GetBucket(message.bandwidth());
  if (message.has_ops()) state.ops = GetBucket(message.ops());
  return state;
}

}  // namespace ember::virtio
