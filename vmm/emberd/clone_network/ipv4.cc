#include "vmm/emberd/clone_network/ipv4.h"

#include <arpa/inet.h>

#include <charconv>

namespace ember::emberd {

absl::StatusOr<Ipv4Cidr> Ipv4Cidr::Parse(std::string_view text) {
  auto refuse = [&] {
    return absl::InvalidArgumentError("\"" + std::string(text) +
                                      "\" is not an IPv4 address A.B.C.D or A.B.C.D/N (N 0-32)");
  };
  const std::size_t slash = text.find('/');
  const std::string address(text.substr(0, slash));
  in_addr in{};
  if (::inet_pton(AF_INET, address.c_str(), &in) != 1) return refuse();
  Ipv4Cidr cidr{ntohl(in.s_addr), 32};
  if (slash != std::string_view::npos) {
    std::string_view length = text.substr(slash + 1);
    auto [end, ec] = std::from_chars(length.data(), length.data() + length.size(), cidr.prefix);
    if (length.empty() || ec != std::errc() || end != length.data() + length.size() ||
        cidr.prefix < 0 || cidr.prefix > 32) {
      return refuse();
    }
  }
  return cidr;
}

std::string Ipv4Cidr::AddressString() const {
  in_addr in{htonl(address)};
  char text[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &in, text, sizeof(text));
  return text;
}

std::string Ipv4Cidr::ToString() const { return AddressString() + "/" + std::to_string(prefix); }

}  // namespace ember::emberd
