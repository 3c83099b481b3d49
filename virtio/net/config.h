#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "virtio/rate_limiter.h"

namespace ember::virtio::net {

using MacAddress = std::array<std::uint8_t, 6>;

// One network interface, as the VM configuration (NetworkInterface) describes it.
struct NetConfig {
  std::string iface_id;       // names metrics ("net_<iface_id>") and logs
  std::string host_dev_name;  // the host tap device
  // Create the tap when it does not exist (needs CAP_NET_ADMIN). Off: the tap must exist,
  // as in Firecracker, where the jail has no right to create it.
  bool create_tap = false;
  std::optional<MacAddress> guest_mac;  // offered with VIRTIO_NET_F_MAC when set
  RateLimiterConfig rx_rate_limiter;
  RateLimiterConfig tx_rate_limiter;
  std::uint16_t queue_size = 256;
};

// Parses "aa:bb:cc:dd:ee:ff" (hex digits, either case, colon-separated, two digits each).
// Errors name the text; a multicast address (low bit of the first byte) is refused because
// the guest could not use it as its own.
[[nodiscard]] absl::StatusOr<MacAddress> ParseMac(const std::string& text);
[[nodiscard]] std::string FormatMac(const MacAddress& mac);

}  // namespace ember::virtio::net
