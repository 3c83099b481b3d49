#pragma once

#include <cstdint>
#include <string>

namespace ember::virtio::vsock {

// The vsock device, as the VM configuration (Vsock) describes it.
struct VsockConfig {
  std::string vsock_id;  // names metrics ("vsock_<id>") and logs
  std::uint64_t guest_cid = 0;  // 3 .. 2^32-2
  // The host side: a Unix listener here for host-initiated connections; a guest connecting
  // to host port P reaches the listener at "<uds_path>_<P>".
  std::string uds_path;
  std::uint16_t queue_size = 256;
};

}  // namespace ember::virtio::vsock
