#include "vmm/device_list.h"

#include "vmm/drive_config.h"
#include "vmm/net_config.h"

namespace ember::vmm {
namespace {

// The device list: one line per kind of virtio device, in placement order. A new device kind
// adds its line here (after the others, so existing guests' devices keep their places).
constexpr DeviceSpecsFn kDeviceList[] = {
    &AddDriveSpecs,      // drives, root first (it becomes /dev/vda)
    &AddInterfaceSpecs,  // network interfaces
    &AddVsockSpec,       // the vsock
};

}  // namespace

absl::StatusOr<std::vector<DeviceSpec>> DeviceSpecsOf(const v1::VmConfig& config) {
  std::vector<DeviceSpec> specs;
  for (DeviceSpecsFn add : kDeviceList) {
    if (absl::Status status = add(config, specs); !status.ok()) return status;
  }
  return specs;
}

}  // namespace ember::vmm
