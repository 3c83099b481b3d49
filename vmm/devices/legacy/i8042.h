#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <span>

#include "absl/status/status.h"
#include "vmm/base/bus_device.h"
#include "vmm/base/event_fd.h"
#include "vmm/base/metrics.h"

namespace ember::devices {

// The PC keyboard controller, reduced to what a guest without a keyboard needs: enough of
// the command set for Linux's i8042 driver to probe it, the CPU-reset command (0xfe) that
// `reboot=k` uses, which signals `reset_event` so the VMM ends the VM cleanly, and one
// keystroke: Ctrl-Alt-Del (SendCtrlAltDel), which a Linux guest turns into a reboot request
// (ctrl_alt_del(): init's SIGINT, or a restart).
// Mapped at ports 0x60–0x64: offset 0 is the data port, 4 the command/status port.
class I8042 : public base::BusDevice {
 public:
  // `reset_event` and `keyboard_irq` (IRQ 1's irqfd; may be null in tests that need no
  // interrupt) are borrowed and must outlive the device.
  explicit I8042(const base::EventFd* reset_event, const base::EventFd* keyboard_irq = nullptr);

  void Read(std::uint64_t offset, std::span<std::uint8_t> data) override;
  void Write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

  // Any thread (the VMM thread's control handler): queues the scancodes of Ctrl-Alt-Del
  // pressed and released (set 2, which the guest reads as the controller does not translate)
  // in the output buffer and raises IRQ 1 when the guest enabled the keyboard interrupt; each
  // byte the guest reads raises it again while more wait, as Linux's handler takes one byte
  // per interrupt. RESOURCE_EXHAUSTED when the guest has left too many bytes unread.
  [[nodiscard]] absl::Status SendCtrlAltDel();

  // At most this many bytes wait in the output buffer: a guest that never reads it costs
  // no more than that.
  static constexpr std::size_t kOutputCapacity = 16;

 private:
  void Command(std::uint8_t command);
  // A command's answer: it replaces whatever waits (keys queued before it are dropped), as
  // the guest polls for the answer at once and takes the first byte it finds.
  void Output(std::uint8_t byte);
  void RaiseKeyboardIrqIfPending();

  const base::EventFd* const reset_event_;
  const base::EventFd* const keyboard_irq_;
  base::Metric* resets_;
  base::Metric* keystrokes_;

  std::mutex mu_;  // vCPU threads may race on the ports, and the VMM thread queues keys
  std::uint8_t status_ = 0x04;       // guarded by mu_ (system flag: self-test passed)
  std::uint8_t control_ = 0x01;      // guarded by mu_ (keyboard interrupt enabled)
  std::deque<std::uint8_t> output_;  // guarded by mu_; the front is what the data port reads
  std::uint8_t pending_command_ = 0; // guarded by mu_: a command awaiting its data byte
};

}  // namespace ember::devices
