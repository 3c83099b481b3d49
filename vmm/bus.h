#pragma once

#include <cstdint>
#include <map>
#include <span>

#include "absl/status/status.h"
#include "vmm/base/bus_device.h"
#include "vmm/base/metrics.h"

namespace ember::vmm {

// Address → device dispatch for one address space (port I/O or MMIO). Filled in by the
// builder before any vCPU runs and read-only afterwards, so vCPU threads look up without
// locks. Devices are borrowed: their owner (the Vmm) outlives the bus's use.
class Bus {
 public:
  explicit Bus(const char* name);

  // Claims [base, base+size) for `device`. Fails on an overlap with an earlier claim.
  [[nodiscard]] absl::Status Insert(std::uint64_t base, std::uint64_t size, base::BusDevice* device);

  // Dispatch an access. Returns false, leaving `data` as all-ones for reads (an
  // undriven bus line), when no device claims the address; that is counted, not fatal.
  bool Read(std::uint64_t addr, std::span<std::uint8_t> data) const;
  bool Write(std::uint64_t addr, std::span<const std::uint8_t> data) const;

 private:
  struct Entry {
    std::uint64_t size;
    base::BusDevice* device;
  };
  // The device covering `addr` and the offset within it, or null.
  base::BusDevice* Find(std::uint64_t addr, std::uint64_t len, std::uint64_t* offset) const;

  std::map<std::uint64_t, Entry> entries_;  // keyed by base address
  base::Metric* unhandled_;
};

}  // namespace ember::vmm
