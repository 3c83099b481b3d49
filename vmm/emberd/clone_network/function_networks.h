#pragma once

#include <optional>

#include "vmm/emberd/clone_network/ipv4.h"
#include "vmm/emberd/clone_network/network_server.h"
#include "vmm/emberd/functions/clone_network.h"

namespace ember::emberd {

// The Functions pool's clone networks (functions::CloneNetworks, fn's seam) from emberd's
// clone network server: each clone gets a network of its own, shaped after its function's
// deploy VM: that VM's one network interface's tap name, `tap_address` on the tap (the
// guest's gateway), egress when `egress`. The server keeps networks of each shape made ahead.
// Any thread; `server` outlives this and every lease.
class FunctionNetworks final : public functions::CloneNetworks {
 public:
  FunctionNetworks(CloneNetworkServer& server, std::optional<Ipv4Cidr> tap_address, bool egress)
      : server_(server), tap_address_(tap_address), egress_(egress) {}

  // FailedPrecondition unless the deploy VM has exactly one network interface; the server's
  // errors otherwise. The lease's netns_path is the network's mount (VmManager::Restore's
  // netns_paths); it needs no overrides, the tap having the deploy VM's name.
  [[nodiscard]] absl::StatusOr<std::unique_ptr<functions::CloneNetworkLease>> Acquire(
      const std::string& function, const std::string& vm_id, const v1::VmConfig& deployed) override;

 private:
  CloneNetworkServer& server_;
  const std::optional<Ipv4Cidr> tap_address_;
  const bool egress_;
};

}  // namespace ember::emberd
