#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/vm_config.pb.h"
#include "virtio/block/config.h"
#include "vmm/device_list.h"

namespace ember::vmm {

// The config's token bucket and rate limiter as the devices take them, checked by the rules
// (rules::CheckTokenBucket); errors name `field`, e.g.
// "drives[0].rate_limiter.bandwidth.refill_time: ...".
[[nodiscard]] absl::StatusOr<virtio::TokenBucketConfig> TokenBucketOf(
    const v1::TokenBucket& bucket, const std::string& field);
[[nodiscard]] absl::StatusOr<virtio::RateLimiterConfig> RateLimiterOf(
    const v1::RateLimiter& limiter, const std::string& field);

// Turns the `drives` of a config that rules::CheckVmConfig accepted (ids, engines, cache
// types, duplicates, one root) into block-device configurations, root drive first, checking
// what needs the host: two writable users of one file ("drives: ...").
[[nodiscard]] absl::StatusOr<std::vector<virtio::block::BlockConfig>> DriveConfigs(
    const v1::VmConfig& config);

// The device list's line for drives (device_list.cc): a spec per drive, root first. A drive
// file that cannot be used is the user's input (InvalidArgument, as BlockDevice::Create
// reports it); an engine that cannot be set up is the host's failure.
[[nodiscard]] absl::Status AddDriveSpecs(const v1::VmConfig& config,
                                         std::vector<DeviceSpec>& specs);

}  // namespace ember::vmm
