#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "ember/v1/api.pb.h"
#include "vmm/agent_client/agent_client.h"
#include "vmm/base/path_rules.h"
#include "vmm/emberd/functions/agent_socket.h"
#include "vmm/emberd/functions/clone_network.h"
#include "vmm/emberd/functions/function_store.h"
#include "vmm/emberd/functions/image_cache.h"
#include "vmm/emberd/vm_manager.h"

namespace ember::emberd::functions {

// The VM id of a function's deploy VM, and the id prefix of all its VMs.
[[nodiscard]] std::string DeployVmId(const std::string& function);
[[nodiscard]] std::string VmIdPrefix(const std::string& function);
// The image cache's key of `function`'s image (ImageKey): empty before one was added.
[[nodiscard]] std::string ImageKeyOf(const v1::Function& function);

// DeployFunction's steps, through emberd's VM machinery: the image into the cache (built from
// an OCI archive by `rootfs`, which may be null, then refused), one VM
// created (with network on, inside a clone network, so that its tap is what every clone finds
// in its own) and started, the agent's answer to Ready, StartHandler, the warm-ups, Pause, a
// FULL snapshot, the VM deleted. Any thread; everything it is given outlives it.
class Deployer {
 public:
  Deployer(VmManager& vms, ImageCache& images, const FunctionStore& store,
           const base::PathRules& paths, CloneNetworks& networks, AgentSockets sockets,
           RootfsBuilder* rootfs)
      : vms_(vms),
        images_(images),
        store_(store),
        paths_(paths),
        networks_(networks),
        sockets_(std::move(sockets)),
        rootfs_(rootfs) {}

  // Deploys into `function` (its name set and its directory claimed; its record saved as
  // DEPLOYING before anything else is made, and again with the image's digest once that is
  // known, so that a restarted emberd can clean up after a deploy it did not finish). On
  // success `function` is READY and saved. Once `function` has an image_sha256, it holds a
  // reference to that image (ImageCache), the caller's to release. On failure the VM and the
  // snapshot it made are gone; the record and the image's reference are the caller's.
  [[nodiscard]] absl::Status Deploy(const v1::DeployFunctionRequest& request,
                                    v1::Function* function);

 private:
  [[nodiscard]] absl::Status BootAndSnapshot(const v1::DeployFunctionRequest& request,
                                             const v1::VmConfig& config, v1::Function* function);
  [[nodiscard]] absl::Status WarmUp(const v1::DeployFunctionRequest& request,
                                    const agent_client::Endpoint& agent);

  VmManager& vms_;
  ImageCache& images_;
  const FunctionStore& store_;
  const base::PathRules& paths_;
  CloneNetworks& networks_;
  const AgentSockets sockets_;
  RootfsBuilder* const rootfs_;  // null: deploys from OCI archives are refused
};

}  // namespace ember::emberd::functions
