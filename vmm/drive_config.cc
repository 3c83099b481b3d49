#include "vmm/drive_config.h"

#include "virtio/block/block_device.h"
#include "vmm/base/status.h"
#include "vmm/rules/vm_config_rules.h"

namespace ember::vmm {
namespace {

virtio::block::BlockConfig DriveConfig(const v1::Drive& drive) {
  virtio::block::BlockConfig config;
  config.drive_id = drive.drive_id();
  config.path = drive.path_on_host();
  config.read_only = drive.is_read_only();
  config.direct_io = drive.direct_io();
  // Firecracker's names (the rules allow only these); Ember's io_uring engine is its "Async".
  config.engine = drive.io_engine() == "Sync" ? virtio::block::EngineKind::kSync
                                              : virtio::block::EngineKind::kIoUring;
  config.cache = drive.cache_type() == "Writeback" ? virtio::block::CacheMode::kWriteback
                                                   : virtio::block::CacheMode::kUnsafe;
  return config;
}

}  // namespace

absl::StatusOr<virtio::TokenBucketConfig> TokenBucketOf(const v1::TokenBucket& bucket,
                                                        const std::string& field) {
  EMBER_RETURN_IF_ERROR(rules::CheckTokenBucket(bucket, field));
  return virtio::TokenBucketConfig{bucket.size(), bucket.one_time_burst(), bucket.refill_time()};
}

absl::StatusOr<virtio::RateLimiterConfig> RateLimiterOf(const v1::RateLimiter& limiter,
                                                        const std::string& field) {
  virtio::RateLimiterConfig config;
  EMBER_ASSIGN_OR_RETURN(config.bandwidth,
                         TokenBucketOf(limiter.bandwidth(), field + ".bandwidth"));
  EMBER_ASSIGN_OR_RETURN(config.ops, TokenBucketOf(limiter.ops(), field + ".ops"));
  return config;
}

absl::StatusOr<std::vector<virtio::block::BlockConfig>> DriveConfigs(const v1::VmConfig& config) {
  std::vector<virtio::block::BlockConfig> drives;
  for (int i = 0; i < config.drives_size(); ++i) {
    const v1::Drive& drive = config.drives(i);
    virtio::block::BlockConfig block = DriveConfig(drive);
    EMBER_ASSIGN_OR_RETURN(block.rate_limiter,
                           RateLimiterOf(drive.rate_limiter(),
                                         "drives[" + std::to_string(i) + "].rate_limiter"));
    // The root drive goes first so that it becomes /dev/vda, as root=/dev/vda promises.
    auto position = drive.is_root_device() ? drives.begin() : drives.end();
    drives.insert(position, std::move(block));
  }
  if (auto status = virtio::block::CheckDrivesShareNoWritableFile(drives); !status.ok()) {
    return absl::InvalidArgumentError("drives: " + std::string(status.message()));
  }
  return drives;
}

absl::Status AddDriveSpecs(const v1::VmConfig& config, std::vector<DeviceSpec>& specs) {
  EMBER_ASSIGN_OR_RETURN(std::vector<virtio::block::BlockConfig> drives, DriveConfigs(config));
  for (virtio::block::BlockConfig& drive : drives) {
    std::string id = drive.drive_id;
    specs.push_back({std::move(id), [drive = std::move(drive)](DeviceIndex& index)
                                        -> absl::StatusOr<std::unique_ptr<virtio::VirtioDevice>> {
      auto device = virtio::block::BlockDevice::Create(drive);
      if (!device.ok()) {
        return absl::Status(device.status().code(), "drive \"" + drive.drive_id + "\": " +
                                                        std::string(device.status().message()));
      }
      index.drives.Add(drive.drive_id, device->get());
      return std::unique_ptr<virtio::VirtioDevice>(std::move(*device));
    }});
  }
  return absl::OkStatus();
}

}  // namespace ember::vmm
