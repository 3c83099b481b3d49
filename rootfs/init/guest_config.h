#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "rootfs/init/cmdline.h"

// What ember-init reads from the kernel command line (README.md in this folder lists the keys).
// Parsing only: nothing here touches the system.
namespace ember::init {

// One interface's static IPv4 settings.
struct NetSettings {
  std::string device = "eth0";
  in_addr address{};
  int prefix_length = 0;
  std::optional<in_addr> gateway;
  std::string hostname;  // from ip='s <hostname> field; empty when not given
};

// Linux's `ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>[:dns0:dns1:ntp0]`
// (Documentation/admin-guide/nfs/nfsroot.rst), static addresses only: <autoconf> empty, `off`
// or `none`. An empty <netmask> is the address's class mask and an empty <device> is eth0, as
// in Linux. `ip=off` / `ip=none` alone mean no configuration (nullopt). DHCP, BOOTP and RARP
// are refused: there is no DHCP client in the guest.
[[nodiscard]] absl::StatusOr<std::optional<NetSettings>> ParseLinuxIp(std::string_view value);

// Ember's own key: `ember.ip=<address>/<prefix length>[,gw=<gateway>][,dev=<device>]`.
[[nodiscard]] absl::StatusOr<NetSettings> ParseEmberIp(std::string_view value);

// `ember.seed=<hex>`: bytes for the kernel's entropy pool, at most kMaxSeedBytes.
inline constexpr std::size_t kMaxSeedBytes = 256;
[[nodiscard]] absl::StatusOr<std::vector<std::uint8_t>> ParseSeed(std::string_view hex);

inline constexpr char kDefaultHostname[] = "ember";

struct GuestConfig {
  std::string hostname = kDefaultHostname;
  std::optional<NetSettings> net;
  std::vector<std::uint8_t> seed;
  std::vector<std::string> agent_args;
  // One line per key that could not be used, naming the key and why; the rest of the
  // configuration still applies.
  std::vector<std::string> errors;
};

// Reads every key ember-init knows; a bad value is reported in `errors` and left out.
[[nodiscard]] GuestConfig ReadGuestConfig(const Cmdline& cmdline);

}  // namespace ember::init
