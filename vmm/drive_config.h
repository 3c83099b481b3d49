#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/vm_config.pb.h"
#include "virtio/block/config.h"

namespace ember::vmm {

// Shared by the device sections of the config (drives, network-interfaces, vsock).
// Whether `id` is a valid device id: 1-64 letters, digits, '_' or '-'.
[[nodiscard]] bool ValidDeviceId(const std::string& id);
// The config's token bucket and rate limiter, checked by virtio::ValidateTokenBucket (one rule
// for ember-vmm's config and runtime updates alike); errors name `field`, e.g.
// "drives[0].rate_limiter.bandwidth.refill_time: ...".
[[nodiscard]] absl::StatusOr<virtio::TokenBucketConfig> TokenBucketOf(
    const v1::TokenBucket& bucket, const std::string& field);
[[nodiscard]] absl::StatusOr<virtio::RateLimiterConfig> RateLimiterOf(
    const v1::RateLimiter& limiter, const std::string& field);

// Turns the config's Firecracker-style `drives` into block-device configurations, checking
// every field (ids, engines, cache types, duplicate ids, two writable users of one file).
// Errors name the drive and field, e.g. "drives[1].io_engine: ...".
[[nodiscard]] absl::StatusOr<std::vector<virtio::block::BlockConfig>> DriveConfigs(
    const v1::VmConfig& config);

}  // namespace ember::vmm
