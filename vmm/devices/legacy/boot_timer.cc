#include "vmm/devices/legacy/boot_timer.h"

#include <algorithm>

#include "vmm/base/clock.h"
#include "vmm/base/logging.h"

namespace ember::devices {

BootTimer::BootTimer(std::uint64_t start_us, std::function<void(std::uint64_t)> on_boot)
    : start_us_(start_us),
      on_boot_(std::move(on_boot)),
      boot_time_us_(base::MetricsRegistry::Global().Get("boot", "boot_time_us")) {}

void BootTimer::Read(std::uint64_t, std::span<std::uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
}

void BootTimer::Write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (offset != 0 || data.empty() || data[0] != kMagic) return;
  if (fired_.exchange(true)) return;
  std::uint64_t elapsed = base::MonotonicMicros() - start_us_;
  boot_time_us_->Set(elapsed);
  EMBER_LOG(kInfo) << "Guest-boot-time = " << elapsed << " us " << elapsed / 1000 << " ms";
  if (on_boot_) on_boot_(elapsed);
}

}  // namespace ember::devices
