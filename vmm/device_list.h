#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/vm_config.pb.h"
#include "virtio/device.h"
#include "vmm/device_index.h"

namespace ember::vmm {

// One virtio device a config asks for, not created yet.
struct DeviceSpec {
  // Its config id (drive_id, iface_id, vsock_id).
  std::string id;
  // Creates the device (opening its files, taps or sockets) and records it in `index` when it
  // is looked up at run time. Errors: InvalidArgument naming the config field when the user's
  // input is at fault (a missing drive file or tap, a socket path in use); any other code is
  // a host failure (an io_uring that cannot be set up, memory), which is no fault of the
  // config's. Called once, on the VMM thread.
  std::function<absl::StatusOr<std::unique_ptr<virtio::VirtioDevice>>(DeviceIndex& index)>
      create;
};

// A function that appends the specs of one kind of device in `config`, in config order.
using DeviceSpecsFn = absl::Status (*)(const v1::VmConfig& config,
                                       std::vector<DeviceSpec>& specs);

// The specs of every virtio device of `config` (which rules::CheckVmConfig accepted), in the
// one order boot and restore share: the device list's kinds in turn (device_list.cc). The
// guest sees the devices in this order (MMIO windows and GSIs follow it), and so does a
// snapshot. Errors: InvalidArgument naming the field (a bad MAC, two drives on one file).
[[nodiscard]] absl::StatusOr<std::vector<DeviceSpec>> DeviceSpecsOf(const v1::VmConfig& config);

}  // namespace ember::vmm
