#pragma once

#include <cstdint>
#include <span>

namespace ember::base {

// A device reachable through port I/O or MMIO. The bus calls these on the vCPU thread
// that took the exit, with `offset` relative to the device's base address and 1–8 bytes
// of data; they must be cheap and must never block. A device shared with other threads
// guards its own state.
class BusDevice {
 public:
  virtual ~BusDevice() = default;
  // Fills `data` with the register value at `offset` (unmapped registers read as zeros).
  virtual void Read(std::uint64_t offset, std::span<std::uint8_t> data) = 0;
  virtual void Write(std::uint64_t offset, std::span<const std::uint8_t> data) = 0;
};

}  // namespace ember::base
