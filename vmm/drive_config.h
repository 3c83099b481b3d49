#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/vm_config.pb.h"
#include "virtio/block/config.h"

namespace ember::vmm {

// Shared by the device sections of the config (drives, network-interfaces, vsock).
// Whether `id` is a valid device id: 1-64 letters, digits, '_' or '-'.
[[nodiscard]] bool ValidDeviceId(const std::string& id);
[[nodiscard]] virtio::TokenBucketConfig TokenBucketOf(const v1::TokenBucket& bucket);

// Turns the config's Firecracker-style `drives` into block-device configurations, checking
// every field (ids, engines, cache types, duplicate ids, two writable users of one file).
// Errors name the drive and field, e.g. "drives[1].io_engine: ...".
[[nodiscard]] absl::StatusOr<std::vector<virtio::block::BlockConfig>> DriveConfigs(
    const v1::VmConfig& config);

}  // namespace ember::vmm
