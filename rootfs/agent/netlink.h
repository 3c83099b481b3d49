#pragma once

#include <netinet/in.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::agent {

// The few rtnetlink requests PostRestore makes, each acknowledged by the kernel. Owned by one
// thread.
class Netlink {
 public:
  [[nodiscard]] static absl::StatusOr<Netlink> Open();

  [[nodiscard]] absl::Status SetLinkUp(int index, bool up);
  [[nodiscard]] absl::Status SetMac(int index, const std::array<std::uint8_t, 6>& mac);
  // Removes every IPv4 address of the interface: a clone keeps none of its parent's.
  [[nodiscard]] absl::Status FlushIpv4(int index);
  [[nodiscard]] absl::Status AddIpv4(int index, in_addr address, int prefix);
  // The default route through `gateway` on the interface, replacing any other.
  [[nodiscard]] absl::Status ReplaceDefaultRoute(int index, in_addr gateway);

 private:
  explicit Netlink(base::UniqueFd fd) : fd_(std::move(fd)) {}
  // Sends one request and reads its acknowledgement; the kernel's error as an errno status.
  absl::Status Request(std::string message, const std::string& what);
  // Sends a dump request and returns each message's bytes (header included).
  absl::StatusOr<std::vector<std::string>> Dump(std::string message, const std::string& what);

  base::UniqueFd fd_;
  std::uint32_t seq_ = 1;
};

}  // namespace ember::agent
