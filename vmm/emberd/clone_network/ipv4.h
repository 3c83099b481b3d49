#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace ember::emberd {

// An IPv4 address with a prefix length, as `ip addr` writes it ("10.200.0.1/30").
struct Ipv4Cidr {
  std::uint32_t address = 0;  // host byte order
  int prefix = 32;

  // "A.B.C.D/N" (N 0-32) or "A.B.C.D" (/32); anything else is InvalidArgument naming `text`.
  [[nodiscard]] static absl::StatusOr<Ipv4Cidr> Parse(std::string_view text);
  [[nodiscard]] std::string ToString() const;       // "A.B.C.D/N"
  [[nodiscard]] std::string AddressString() const;  // "A.B.C.D"
  [[nodiscard]] std::uint32_t Netmask() const {
    return prefix == 0 ? 0 : ~std::uint32_t{0} << (32 - prefix);
  }
  friend bool operator==(const Ipv4Cidr&, const Ipv4Cidr&) = default;
};

}  // namespace ember::emberd
