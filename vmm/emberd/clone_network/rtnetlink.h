#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"
#include "vmm/emberd/clone_network/ipv4.h"

namespace ember::emberd {

// The few rtnetlink requests a clone's network needs (links, addresses, a default route),
// written directly: each is one message and its acknowledgement, smaller than a dependency.
// Every request acts on the network namespace the socket was opened in, wherever the thread
// is later. One thread at a time; errors keep the kernel's errno and name the link.
class RtNetlink {
 public:
  // A NETLINK_ROUTE socket in the calling thread's network namespace.
  [[nodiscard]] static absl::StatusOr<RtNetlink> Open();

  // The index of link `name`; NotFound when there is none.
  [[nodiscard]] absl::StatusOr<int> LinkIndex(const std::string& name);
  // Sets link `name` administratively up.
  [[nodiscard]] absl::Status SetUp(const std::string& name);
  [[nodiscard]] absl::Status AddAddress(const std::string& name, Ipv4Cidr cidr);
  // The main table's default route, through `gateway` (host byte order).
  [[nodiscard]] absl::Status AddDefaultRoute(std::uint32_t gateway);
  // A veth pair: `name` in this socket's namespace, its peer `peer` created straight in the
  // namespace of `peer_netns_fd`. AlreadyExists when either name is taken.
  [[nodiscard]] absl::Status CreateVethPair(const std::string& name, const std::string& peer,
                                            int peer_netns_fd);
  // Deletes link `name` (both ends, for a veth); NotFound when there is none.
  [[nodiscard]] absl::Status DeleteLink(const std::string& name);

 private:
  explicit RtNetlink(base::UniqueFd fd) : fd_(std::move(fd)) {}
  // Sends `message` (its header's length, sequence and flags are filled in here) and reads
  // up to its acknowledgement; `reply`, when given, gets the first answer that is not one.
  [[nodiscard]] absl::Status Transact(std::vector<std::uint8_t> message, const std::string& what,
                                      const std::string& object,
                                      std::vector<std::uint8_t>* reply = nullptr);

  base::UniqueFd fd_;
  std::uint32_t sequence_ = 0;
};

}  // namespace ember::emberd
