#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "virtio/rate_limiter.h"

namespace ember::virtio::block {

enum class EngineKind { kIoUring, kSync };

// Firecracker's cache types: kUnsafe offers no FLUSH (the guest believes writes are durable
// and never flushes); kWriteback offers VIRTIO_BLK_F_FLUSH and honours it with fdatasync.
enum class CacheMode { kUnsafe, kWriteback };

// One drive, as the VM configuration describes it.
struct BlockConfig {
  std::string drive_id;  // names metrics ("block_<id>") and answers VIRTIO_BLK_T_GET_ID
  std::string path;      // regular file or block device, size a multiple of 512 bytes
  bool read_only = false;
  EngineKind engine = EngineKind::kIoUring;
  CacheMode cache = CacheMode::kUnsafe;
  bool direct_io = false;  // O_DIRECT: bypass the host page cache
  RateLimiterConfig rate_limiter;
  std::uint16_t queue_size = 256;
};

// Parses a command-line drive token: comma-separated key=value pairs,
//   id=<drive id>,path=<file>[,ro=on|off][,engine=io_uring|sync][,cache=unsafe|writeback]
//   [,direct=on|off][,bw_size=N,bw_burst=N,bw_refill_ms=N][,ops_size=N,ops_burst=N,
//   ops_refill_ms=N]
// e.g. "id=rootfs,path=/images/rootfs.ext4,ro=on,engine=sync". Unknown keys are errors.
[[nodiscard]] absl::StatusOr<BlockConfig> ParseDriveToken(const std::string& token);

// Fails when two drives would open the same file (same device and inode) and at least one
// of them writably: the guest would corrupt its own file system.
[[nodiscard]] absl::Status CheckDrivesShareNoWritableFile(const std::vector<BlockConfig>& drives);

}  // namespace ember::virtio::block
