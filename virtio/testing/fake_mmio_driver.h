#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "virtio/queue.h"
#include "vmm/base/bus_device.h"

namespace ember::virtio::testing {

// The register side of a virtio-mmio guest driver (tests and benchmarks only): 32-bit
// register accesses against a transport, and Linux's probe sequence. Borrows `transport`.
class FakeMmioDriver {
 public:
  explicit FakeMmioDriver(base::BusDevice& transport) : transport_(&transport) {}

  [[nodiscard]] std::uint32_t Read32(std::uint64_t offset) const;
  void Write32(std::uint64_t offset, std::uint32_t value) const;
  [[nodiscard]] std::uint64_t DeviceFeatures() const;
  void WriteDriverFeatures(std::uint64_t features) const;
  // Programs queue `index` with `layout` and enables it.
  void SetUpQueue(std::uint32_t index, const QueueLayout& layout) const;

  // What Linux's virtio_mmio + virtio core do on probe: reset, ACKNOWLEDGE, DRIVER, accept
  // `features` (which must be a subset of the device's), FEATURES_OK, set up `queues` in
  // order, DRIVER_OK. Fails, naming the step, when the device refuses one.
  [[nodiscard]] absl::Status Initialize(std::uint64_t features,
                                        const std::vector<QueueLayout>& queues) const;

 private:
  base::BusDevice* transport_;
};

}  // namespace ember::virtio::testing
