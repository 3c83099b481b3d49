#pragma once

#include <map>
#include <string>

namespace ember::virtio::block {
class BlockDevice;
}
namespace ember::virtio::net {
class NetDevice;
}

namespace ember::vmm {

// Devices of one type by their config id. The devices are owned elsewhere (VirtioDevices'
// transports) and outlive the index.
template <class Device>
class DevicesById {
 public:
  void Add(const std::string& id, Device* device) { by_id_[id] = device; }
  // The device with this id, or null.
  [[nodiscard]] Device* Find(const std::string& id) const {
    auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : it->second;
  }

 private:
  std::map<std::string, Device*> by_id_;
};

// The devices the VMM finds at run time (rate-limit updates), each with its own type: filled
// by the device specs as they create their devices (device_list.h), so nothing is found by
// casting and comparing names. A device kind that is never looked up has no entry.
struct DeviceIndex {
  DevicesById<virtio::block::BlockDevice> drives;     // by drive_id
  DevicesById<virtio::net::NetDevice> interfaces;     // by iface_id
};

}  // namespace ember::vmm
