#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>

#include "vmm/base/bus_device.h"
#include "vmm/base/metrics.h"

namespace ember::devices {

// Firecracker's boot-time device: when the guest writes kBootTimerMagic to offset 0, the
// VMM logs and records the time since the start command, which is how Firecracker defines
// boot time. Only the first write counts.
class BootTimer : public base::BusDevice {
 public:
  static constexpr std::uint8_t kMagic = 123;

  // `start_us`: CLOCK_MONOTONIC µs of the start command. `on_boot` (may be empty) runs on
  // the vCPU thread with the boot time in µs; it must not block.
  BootTimer(std::uint64_t start_us, std::function<void(std::uint64_t)> on_boot);

  void Read(std::uint64_t offset, std::span<std::uint8_t> data) override;
  void Write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

 private:
  const std::uint64_t start_us_;
  std::function<void(std::uint64_t)> on_boot_;
  std::atomic<bool> fired_{false};
  base::Metric* boot_time_us_;
};

}  // namespace ember::devices
