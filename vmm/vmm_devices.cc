// Vmm's virtio devices: which ones, and in which order (the rest of Vmm is in vmm.cc).
#include "virtio/net/net_device.h"
#include "virtio/vsock/vsock_device.h"
#include "vmm/base/status.h"
#include "vmm/vmm.h"

namespace ember::vmm {

absl::Status Vmm::CreateVirtioDevices(const std::vector<virtio::block::BlockConfig>& drives,
                                      const std::vector<virtio::net::NetConfig>& nets,
                                      const std::optional<virtio::vsock::VsockConfig>& vsock) {
  // This order is the devices' identity in a snapshot (RestoreFromSnapshot matches saved
  // state to devices by position), and the guest's too (MMIO windows and GSIs follow it):
  // drives (root first), then network interfaces in config order, then the vsock.
  EMBER_RETURN_IF_ERROR(CreateBlockDevices(drives));
  for (std::size_t i = 0; i < nets.size(); ++i) {
    auto device = virtio::net::NetDevice::Create(nets[i]);
    if (!device.ok()) {
      // A missing, busy or forbidden tap is the user's input, as a bad MAC is.
      return absl::InvalidArgumentError("network-interfaces[" + std::to_string(i) +
                                        "].host_dev_name: " +
                                        std::string(device.status().message()));
    }
    EMBER_RETURN_IF_ERROR(AddVirtioDevice(std::move(*device)));
  }
  if (vsock) {
    auto device = virtio::vsock::VsockDevice::Create(*vsock);
    if (!device.ok()) {
      // The CID and the path's length were checked with the config: what is left is the
      // path (exists already, no such directory, cannot bind).
      return absl::InvalidArgumentError("vsock.uds_path: " +
                                        std::string(device.status().message()));
    }
    EMBER_RETURN_IF_ERROR(AddVirtioDevice(std::move(*device)));
  }
  return absl::OkStatus();
}

absl::Status Vmm::AddVirtioDevice(std::unique_ptr<virtio::VirtioDevice> device) {
  EMBER_ASSIGN_OR_RETURN(base::EventFd irq, base::EventFd::Create());
  EMBER_ASSIGN_OR_RETURN(auto transport,
                         virtio::MmioTransport::Create(*memory_, std::move(device), std::move(irq)));
  return virtio_devices_.Add(std::move(transport), mmio_bus_, *vm_, *loop_);
}

}  // namespace ember::vmm
