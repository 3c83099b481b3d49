#pragma once

#include <cstdint>
#include <mutex>
#include <span>

#include "vmm/base/bus_device.h"
#include "vmm/base/event_fd.h"
#include "vmm/base/metrics.h"

namespace ember::devices {

// The PC keyboard controller, reduced to what a guest without a keyboard needs: enough of
// the command set for Linux's i8042 driver to probe it, and the CPU-reset command (0xfe)
// that `reboot=k` uses, which signals `reset_event` so the VMM ends the VM cleanly.
// Mapped at ports 0x60–0x64: offset 0 is the data port, 4 the command/status port.
class I8042 : public base::BusDevice {
 public:
  // `reset_event` is borrowed and must outlive the device.
  explicit I8042(const base::EventFd* reset_event);

  void Read(std::uint64_t offset, std::span<std::uint8_t> data) override;
  void Write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

 private:
  void Command(std::uint8_t command);
  void Output(std::uint8_t byte);

  const base::EventFd* const reset_event_;
  base::Metric* resets_;

  std::mutex mu_;  // vCPU threads may race on the ports
  std::uint8_t status_ = 0x04;       // guarded by mu_ (system flag: self-test passed)
  std::uint8_t control_ = 0x01;      // guarded by mu_ (keyboard interrupt enabled)
  std::uint8_t output_ = 0;          // guarded by mu_
  std::uint8_t pending_command_ = 0; // guarded by mu_: a command awaiting its data byte
};

}  // namespace ember::devices
