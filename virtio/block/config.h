#pragma once

#include <chrono>
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
  // How long a driver reset or a snapshot waits for requests in flight in the host before it
  // gives up with an error: a hung disk (a dead NFS server, say) must not hold a vCPU or the
  // VMM thread for ever.
  std::chrono::milliseconds in_flight_wait_limit{10'000};
};

// Fails when two drives would open the same file (same device and inode) and at least one
// of them writably: the guest would corrupt its own file system.
[[nodiscard]] absl::Status CheckDrivesShareNoWritableFile(const std::vector<BlockConfig>& drives);

}  // namespace ember::virtio::block
