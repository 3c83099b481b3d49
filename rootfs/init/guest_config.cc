#include "rootfs/init/guest_config.h"

#include <arpa/inet.h>
#include <net/if.h>

#include <charconv>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ember::init {
namespace {

// Debian's abseil has its own string_view type, so pieces go into StrCat as std::string.
std::string S(std::string_view text) { return std::string(text); }

std::vector<std::string_view> Split(std::string_view text, char separator) {
  std::vector<std::string_view> pieces;
  std::size_t start = 0;
  while (true) {
    std::size_t end = text.find(separator, start);
    pieces.push_back(text.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) return pieces;
    start = end + 1;
  }
}

// Bounds from the kernel: HOST_NAME_MAX is 64, an interface name IFNAMSIZ - 1.
constexpr std::size_t kMaxHostname = 64;

absl::StatusOr<in_addr> ParseAddress(std::string_view what, std::string_view text) {
  in_addr address{};
  std::string copy(text);
  if (inet_pton(AF_INET, copy.c_str(), &address) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(S(what), " '", S(text), "' is not an IPv4 address (a.b.c.d)"));
  }
  return address;
}

absl::StatusOr<int> PrefixOfNetmask(std::string_view text) {
  absl::StatusOr<in_addr> mask = ParseAddress("netmask", text);
  if (!mask.ok()) return mask.status();
  std::uint32_t bits = ntohl(mask->s_addr);
  // Contiguous ones from the top: inverting gives 2^k - 1, and adding one a power of two.
  std::uint32_t inverted = ~bits;
  if ((inverted & (inverted + 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("netmask '", S(text), "' is not contiguous ones followed by zeros"));
  }
  return __builtin_popcount(bits);
}

// Linux's default when ip= leaves the netmask out: the address's class.
absl::StatusOr<int> ClassPrefix(in_addr address) {
  std::uint32_t first = ntohl(address.s_addr) >> 24;
  if (first < 128) return 8;
  if (first < 192) return 16;
  if (first < 224) return 24;
  return absl::InvalidArgumentError("no netmask given and the address has no class mask");
}

bool ParseInt(std::string_view text, int& value) {
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc() && end == text.data() + text.size() && !text.empty();
}

absl::Status CheckDevice(std::string_view name) {
  if (name.empty() || name.size() >= IFNAMSIZ || name == "." || name == ".." ||
      name.find_first_of("/: \t") != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", S(name), "' is not a network device name (1-15 characters, no '/', ':')"));
  }
  return absl::OkStatus();
}

absl::Status CheckHostname(std::string_view name) {
  bool valid = !name.empty() && name.size() <= kMaxHostname;
  for (char c : name) {
    valid = valid && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '.');
  }
  if (!valid) {
    return absl::InvalidArgumentError(
        absl::StrCat("hostname '", S(name), "' is not 1-64 letters, digits, '-' and '.'"));
  }
  return absl::OkStatus();
}

void Report(GuestConfig& config, std::string_view key, const absl::Status& status) {
  config.errors.push_back(absl::StrCat(S(key), ": ", status.message()));
}

}  // namespace

absl::StatusOr<std::optional<NetSettings>> ParseLinuxIp(std::string_view value) {
  if (value == "off" || value == "none") return std::optional<NetSettings>();
  std::vector<std::string_view> fields = Split(value, ':');
  if (fields.size() == 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", S(value),
                     "': only static settings are supported (no DHCP/BOOTP/RARP client); "
                     "use <client>:<server>:<gw>:<netmask>:<hostname>:<device>:off"));
  }
  if (fields.size() > 10) {
    return absl::InvalidArgumentError(absl::StrCat("'", S(value), "' has more than 10 fields"));
  }
  fields.resize(10);
  std::string_view autoconf = fields[6];
  if (!autoconf.empty() && autoconf != "off" && autoconf != "none") {
    return absl::InvalidArgumentError(absl::StrCat(
        "autoconf '", S(autoconf), "' is not supported: only static settings (off/none)"));
  }
  if (fields[0].empty()) return absl::InvalidArgumentError("the client address is empty");
  NetSettings net;
  absl::StatusOr<in_addr> address = ParseAddress("client address", fields[0]);
  if (!address.ok()) return address.status();
  net.address = *address;
  absl::StatusOr<int> prefix =
      fields[3].empty() ? ClassPrefix(net.address) : PrefixOfNetmask(fields[3]);
  if (!prefix.ok()) return prefix.status();
  net.prefix_length = *prefix;
  if (!fields[2].empty()) {
    absl::StatusOr<in_addr> gateway = ParseAddress("gateway", fields[2]);
    if (!gateway.ok()) return gateway.status();
    net.gateway = *gateway;
  }
  if (!fields[4].empty()) {
    if (absl::Status status = CheckHostname(fields[4]); !status.ok()) return status;
    net.hostname = std::string(fields[4]);
  }
  if (!fields[5].empty()) {
    if (absl::Status status = CheckDevice(fields[5]); !status.ok()) return status;
    net.device = std::string(fields[5]);
  }
  return std::optional<NetSettings>(std::move(net));
}

absl::StatusOr<NetSettings> ParseEmberIp(std::string_view value) {
  std::vector<std::string_view> parts = Split(value, ',');
  std::vector<std::string_view> cidr = Split(parts[0], '/');
  int prefix = 0;
  if (cidr.size() != 2 || !ParseInt(cidr[1], prefix) || prefix < 0 || prefix > 32) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", S(parts[0]), "' is not <address>/<prefix length 0-32>"));
  }
  NetSettings net;
  absl::StatusOr<in_addr> address = ParseAddress("address", cidr[0]);
  if (!address.ok()) return address.status();
  net.address = *address;
  net.prefix_length = prefix;
  for (std::size_t i = 1; i < parts.size(); ++i) {
    if (parts[i].starts_with("gw=")) {
      absl::StatusOr<in_addr> gateway = ParseAddress("gateway", parts[i].substr(3));
      if (!gateway.ok()) return gateway.status();
      net.gateway = *gateway;
    } else if (parts[i].starts_with("dev=")) {
      if (absl::Status status = CheckDevice(parts[i].substr(4)); !status.ok()) return status;
      net.device = std::string(parts[i].substr(4));
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown setting '", S(parts[i]), "' (gw=<address> or dev=<name>)"));
    }
  }
  return net;
}

absl::StatusOr<std::vector<std::uint8_t>> ParseSeed(std::string_view hex) {
  if (hex.empty() || hex.size() % 2 != 0 || hex.size() / 2 > kMaxSeedBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the seed is ", hex.size(),
                     " hex digits; it must be an even number from 2 to ", 2 * kMaxSeedBytes));
  }
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::vector<std::uint8_t> bytes;
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    int high = nibble(hex[i]);
    int low = nibble(hex[i + 1]);
    if (high < 0 || low < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("the seed has a non-hex digit at position ", high < 0 ? i : i + 1));
    }
    bytes.push_back(static_cast<std::uint8_t>(high << 4 | low));
  }
  return bytes;
}

GuestConfig ReadGuestConfig(const Cmdline& cmdline) {
  GuestConfig config;
  std::string ip_hostname;
  if (std::optional<std::string> ember_ip = cmdline.Get("ember.ip")) {
    absl::StatusOr<NetSettings> net = ParseEmberIp(*ember_ip);
    if (net.ok()) {
      config.net = *net;
    } else {
      Report(config, "ember.ip", net.status());
    }
  } else if (std::optional<std::string> ip = cmdline.Get("ip")) {
    absl::StatusOr<std::optional<NetSettings>> net = ParseLinuxIp(*ip);
    if (net.ok()) {
      config.net = *net;
      if (config.net) ip_hostname = config.net->hostname;
    } else {
      Report(config, "ip", net.status());
    }
  }
  if (std::optional<std::string> hostname = cmdline.Get("ember.hostname")) {
    if (absl::Status status = CheckHostname(*hostname); status.ok()) {
      config.hostname = *hostname;
    } else {
      Report(config, "ember.hostname", status);
    }
  } else if (!ip_hostname.empty()) {
    config.hostname = ip_hostname;
  }
  if (std::optional<std::string> seed = cmdline.Get("ember.seed")) {
    absl::StatusOr<std::vector<std::uint8_t>> bytes = ParseSeed(*seed);
    if (bytes.ok()) {
      config.seed = *std::move(bytes);
    } else {
      Report(config, "ember.seed", bytes.status());
    }
  }
  if (std::optional<std::string> args = cmdline.Get("ember.agent_args")) {
    for (std::string_view arg : Split(*args, ' ')) {
      if (!arg.empty()) config.agent_args.emplace_back(arg);
    }
  }
  return config;
}

}  // namespace ember::init
