#include "vmm/emberd/clone_network/function_networks.h"

#include "vmm/base/logging.h"
#include "vmm/base/status.h"

namespace ember::emberd {
namespace {

// Released (torn down by the server) when the clone is discarded.
class Lease final : public functions::CloneNetworkLease {
 public:
  Lease(CloneNetworkServer& server, PreparedNetwork network)
      : server_(server), network_(std::move(network)) {}
  ~Lease() override {
    if (absl::Status status = server_.Release(network_.id); !status.ok()) {
      EMBER_LOG(kError) << "clone network " << network_.id << " not released: " << status;
    }
  }
  void ApplyTo(v1::RestoreOverrides*) const override {}
  [[nodiscard]] std::string netns_path() const override { return network_.netns_path; }

 private:
  CloneNetworkServer& server_;
  const PreparedNetwork network_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<functions::CloneNetworkLease>> FunctionNetworks::Acquire(
    const std::string& function, const std::string& vm_id, const v1::VmConfig& deployed) {
  if (deployed.network_interfaces_size() != 1) {
    return absl::FailedPreconditionError(
        "function " + function + ": a clone network has one tap, and the deploy VM has " +
        std::to_string(deployed.network_interfaces_size()) + " network interfaces");
  }
  CloneNetworkShape shape{deployed.network_interfaces(0).host_dev_name(), tap_address_, egress_};
  absl::StatusOr<PreparedNetwork> network = server_.Prepare(shape);
  if (!network.ok()) {
    return absl::Status(network.status().code(), "clone " + vm_id + "'s network: " +
                                                     std::string(network.status().message()));
  }
  return std::make_unique<Lease>(server_, std::move(*network));
}

}  // namespace ember::emberd
