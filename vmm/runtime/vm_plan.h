#pragma once

#include <string>

#include "vmm/runtime/bundle.h"
#include "ember/v1/agent.pb.h"
#include "ember/v1/vm_config.pb.h"
#include "vmm/runtime/runtime_config.h"

namespace ember::runtime {

// The name of the tap a container's VM gets inside the container's network namespace (each
// container has a namespace of its own, so one name serves all).
inline constexpr char kTapName[] = "ember0";

// The VM of a container: its kernel (the bundle's annotation, else the runtime's default;
// none: the built-in test guest), command line (with the bundle's hostname for ember-init),
// vCPUs and memory from the bundle, the leased image as its root drive, the vsock device the
// agent is reached through at `vsock_path`, and a virtio-net on kTapName when the bundle names
// a network namespace.
[[nodiscard]] v1::VmConfig PlanVm(const Bundle& bundle, const RuntimeConfig& config,
                                  const std::string& image, bool image_writable,
                                  const std::string& vsock_path, const std::string& id);

// What the agent runs for the bundle's (or exec's) process.
[[nodiscard]] v1::ExecRequest PlanExec(const BundleProcess& process);

}  // namespace ember::runtime
