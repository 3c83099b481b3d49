#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "virtio/mmio/mmio_transport.h"
#include "vmm/arch/x86_64/acpi.h"
#include "vmm/base/event_loop.h"
#include "vmm/bus.h"
#include "vmm/device_index.h"
#include "vmm/kvm/vm.h"

namespace ember::vmm {

// The VM's virtio-mmio devices: where each sits (MMIO window, GSI), and the wiring that
// makes its data path bypass the vCPU threads — queue notifications through ioeventfds
// into the VMM loop, interrupts through irqfds into the in-kernel IOAPIC. Owned by the Vmm;
// built on the VMM thread before the vCPUs start.
class VirtioDevices {
 public:
  // The first GSI given to virtio devices; legacy devices use the ISA IRQs below it.
  static constexpr std::uint32_t kFirstGsi = 5;
  // IOAPIC pins 5..23.
  static constexpr std::size_t kMaxDevices = 19;

  // Places the device behind `transport`, whose config id is `id`, in the next MMIO window.
  // Borrowed objects outlive this one.
  [[nodiscard]] absl::Status Add(std::string id, std::unique_ptr<virtio::MmioTransport> transport,
                                 Bus& mmio_bus, kvm::Vm& vm, base::EventLoop& loop);

  // `virtio_mmio.device=4K@0x<base>:<gsi>` for each device, space-separated, as Linux's
  // virtio_mmio driver reads them from the command line.
  [[nodiscard]] std::string CmdlineTokens() const;
  // Each device's window and GSI in placement order, for the DSDT to declare them.
  [[nodiscard]] std::vector<arch::MmioDevice> MmioDevices() const {
    std::vector<arch::MmioDevice> devices;
    for (const Placement& at : placements_) {
      devices.push_back({at.base, virtio::MmioTransport::kWindowSize, at.gsi});
    }
    return devices;
  }
  [[nodiscard]] std::size_t size() const { return transports_.size(); }
  // In placement order, which is the device list's (device_list.h).
  [[nodiscard]] virtio::MmioTransport& transport(std::size_t i) { return *transports_[i]; }
  // The config id (drive_id, iface_id, vsock_id) of the device at `i`.
  [[nodiscard]] const std::string& id(std::size_t i) const { return ids_[i]; }
  // The devices looked up at run time, by id with their own types; the device specs fill it
  // as they create the devices placed here.
  [[nodiscard]] DeviceIndex& index() { return index_; }
  // The drive / network interface with this id, or null. The device stays owned here; its
  // loop-thread methods (rate-limit updates) are for the VMM thread only.
  [[nodiscard]] virtio::block::BlockDevice* FindDrive(const std::string& drive_id) const {
    return index_.drives.Find(drive_id);
  }
  [[nodiscard]] virtio::net::NetDevice* FindInterface(const std::string& iface_id) const {
    return index_.interfaces.Find(iface_id);
  }

 private:
  struct Placement {
    std::uint64_t base;
    std::uint32_t gsi;
  };
  std::vector<std::unique_ptr<virtio::MmioTransport>> transports_;
  std::vector<std::string> ids_;
  std::vector<Placement> placements_;
  DeviceIndex index_;
};

}  // namespace ember::vmm
