#include "vmm/drive_config.h"

#include <set>

#include "vmm/base/status.h"

namespace ember::vmm {
namespace {

constexpr std::size_t kMaxDeviceIdLength = 64;
constexpr std::size_t kMaxPartuuidLength = 36;  // a GUID; an MBR one ("0eaa91a0-01") is shorter

// Empty, or what root=PARTUUID= takes: it goes onto the kernel command line as it is, so a
// space would smuggle in arguments of its own.
bool ValidPartuuid(const std::string& partuuid) {
  if (partuuid.size() > kMaxPartuuidLength) return false;
  for (char c : partuuid) {
    if (!std::isxdigit(static_cast<unsigned char>(c)) && c != '-') return false;
  }
  return true;
}

absl::StatusOr<virtio::block::BlockConfig> DriveConfig(const v1::Drive& drive,
                                                       const std::string& where) {
  auto error = [&](const std::string& field, const std::string& problem) {
    return absl::InvalidArgumentError(where + "." + field + ": " + problem);
  };
  virtio::block::BlockConfig config;
  if (!ValidDeviceId(drive.drive_id())) {
    return error("drive_id", "\"" + drive.drive_id() +
                                 "\" must be 1-64 letters, digits, '_' or '-'");
  }
  config.drive_id = drive.drive_id();
  if (drive.path_on_host().empty()) return error("path_on_host", "is required");
  config.path = drive.path_on_host();
  config.read_only = drive.is_read_only();
  config.direct_io = drive.direct_io();
  if (!ValidPartuuid(drive.partuuid())) {
    return error("partuuid", "\"" + drive.partuuid() +
                                 "\" is not a partition UUID (hex digits and '-', at most 36)");
  }
  // Firecracker's names; Ember's io_uring engine is its "Async".
  if (drive.io_engine().empty() || drive.io_engine() == "Async") {
    config.engine = virtio::block::EngineKind::kIoUring;
  } else if (drive.io_engine() == "Sync") {
    config.engine = virtio::block::EngineKind::kSync;
  } else {
    return error("io_engine", "\"" + drive.io_engine() + "\" is not Async or Sync");
  }
  if (drive.cache_type().empty() || drive.cache_type() == "Unsafe") {
    config.cache = virtio::block::CacheMode::kUnsafe;
  } else if (drive.cache_type() == "Writeback") {
    config.cache = virtio::block::CacheMode::kWriteback;
  } else {
    return error("cache_type", "\"" + drive.cache_type() + "\" is not Unsafe or Writeback");
  }
  EMBER_ASSIGN_OR_RETURN(config.rate_limiter,
                         RateLimiterOf(drive.rate_limiter(), where + ".rate_limiter"));
  return config;
}

}  // namespace

bool ValidDeviceId(const std::string& id) {
  if (id.empty() || id.size() > kMaxDeviceIdLength) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

absl::StatusOr<virtio::TokenBucketConfig> TokenBucketOf(const v1::TokenBucket& bucket,
                                                        const std::string& field) {
  virtio::TokenBucketConfig config{bucket.size(), bucket.one_time_burst(), bucket.refill_time()};
  EMBER_RETURN_IF_ERROR(virtio::ValidateTokenBucket(config, field));
  return config;
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
  std::set<std::string> ids;
  int roots = 0;
  for (int i = 0; i < config.drives_size(); ++i) {
    const std::string where = "drives[" + std::to_string(i) + "]";
    auto drive = DriveConfig(config.drives(i), where);
    if (!drive.ok()) return drive.status();
    if (!ids.insert(drive->drive_id).second) {
      return absl::InvalidArgumentError(where + ".drive_id: \"" + drive->drive_id +
                                        "\" is used by another drive");
    }
    if (config.drives(i).is_root_device() && ++roots > 1) {
      return absl::InvalidArgumentError(where + ".is_root_device: only one drive can be root");
    }
    // The root drive goes first so that it becomes /dev/vda, as root=/dev/vda promises.
    auto position = config.drives(i).is_root_device() ? drives.begin() : drives.end();
    drives.insert(position, std::move(*drive));
  }
  if (auto status = virtio::block::CheckDrivesShareNoWritableFile(drives); !status.ok()) {
    return absl::InvalidArgumentError("drives: " + std::string(status.message()));
  }
  return drives;
}

}  // namespace ember::vmm
