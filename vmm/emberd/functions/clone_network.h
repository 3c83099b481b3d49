#pragma once

// THE SEAM for per-clone networking (helper "fnnet"): the pool asks a CloneNetworks for a
// clone's network before it restores the clone and drops the lease when it discards it. Keep
// it this small: everything about namespaces, taps, veth pairs and NAT lives behind it.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "ember/v1/api.pb.h"

namespace ember::emberd::functions {

// One clone's network, held for as long as the clone lives; destroying it tears the network
// down (namespace, tap, veth, NAT rules). Owned by the clone.
class CloneNetworkLease {
 public:
  virtual ~CloneNetworkLease() = default;
  // What the clone's restore must change so its VMM uses this network: e.g. the tap of
  // interface "eth0" (RestoreOverrides.network_overrides). Called once, before the restore.
  virtual void ApplyTo(v1::RestoreOverrides* overrides) const = 0;
  // The network namespace the clone's VMM must run in (a path such as /run/netns/NAME), or
  // empty for the host's (or the jail's own).
  [[nodiscard]] virtual std::string netns_path() const = 0;
};

// Hands out clone networks. Called from the pool's threads and from invocations at once: an
// implementation guards its own state.
class CloneNetworks {
 public:
  virtual ~CloneNetworks() = default;
  // A network for clone `vm_id` of function `function` (whose deploy VM had `deployed`'s
  // network interfaces). Called before the clone is restored; may take long (namespace and tap
  // set-up), which is why the pool does it ahead of invocations.
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<CloneNetworkLease>> Acquire(
      const std::string& function, const std::string& vm_id, const v1::VmConfig& deployed) = 0;
};

// For functions deployed without a network (DeployFunctionRequest.network false): no lease.
// Also what emberd uses while no network implementation is plugged in: a function asking for
// one is then refused at deploy (FAILED_PRECONDITION).
class NoCloneNetworks final : public CloneNetworks {
 public:
  absl::StatusOr<std::unique_ptr<CloneNetworkLease>> Acquire(const std::string&,
                                                             const std::string&,
                                                             const v1::VmConfig&) override {
    return std::unique_ptr<CloneNetworkLease>();
  }
};

}  // namespace ember::emberd::functions
