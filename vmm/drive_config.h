#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/vm_config.pb.h"
#include "virtio/block/config.h"

namespace ember::vmm {

// Turns the config's Firecracker-style `drives` into block-device configurations, checking
// every field (ids, engines, cache types, duplicate ids, two writable users of one file).
// Errors name the drive and field, e.g. "drives[1].io_engine: ...".
[[nodiscard]] absl::StatusOr<std::vector<virtio::block::BlockConfig>> DriveConfigs(
    const v1::VmConfig& config);

}  // namespace ember::vmm
