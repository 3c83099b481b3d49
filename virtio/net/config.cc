#include "virtio/net/config.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ember::virtio::net {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

absl::StatusOr<MacAddress> ParseMac(const std::string& text) {
  auto bad = [&](const char* why) {
    return absl::InvalidArgumentError(
        absl::StrCat("guest MAC \"", text, "\" is not valid: ", why,
                     " (expected six colon-separated hex pairs, e.g. 06:00:ac:10:00:02)"));
  };
  if (text.size() != 17) return bad("wrong length");
  MacAddress mac{};
  for (std::size_t i = 0; i < mac.size(); ++i) {
    const std::size_t at = i * 3;
    if (i > 0 && text[at - 1] != ':') return bad("missing ':'");
    const int hi = HexDigit(text[at]);
    const int lo = HexDigit(text[at + 1]);
    if (hi < 0 || lo < 0) return bad("not a hex digit");
    mac[i] = static_cast<std::uint8_t>(hi * 16 + lo);
  }
  if ((mac[0] & 1) != 0) return bad("a multicast address");
  return mac;
}

std::string FormatMac(const MacAddress& mac) {
  return absl::StrFormat("%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3],
                         mac[4], mac[5]);
}

}  // namespace ember::virtio::net
