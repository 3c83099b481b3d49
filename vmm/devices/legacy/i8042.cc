#include "vmm/devices/legacy/i8042.h"

#include <array>

namespace ember::devices {
namespace {

constexpr std::uint64_t kDataPort = 0;
constexpr std::uint64_t kCommandPort = 4;

constexpr std::uint8_t kStatusOutputFull = 0x01;
constexpr std::uint8_t kStatusCommandByte = 0x08;  // last write went to the command port

constexpr std::uint8_t kCmdReadControl = 0x20;
constexpr std::uint8_t kCmdWriteControl = 0x60;
constexpr std::uint8_t kCmdDisableAux = 0xa7;
constexpr std::uint8_t kCmdEnableAux = 0xa8;
constexpr std::uint8_t kCmdSelfTest = 0xaa;
constexpr std::uint8_t kCmdInterfaceTest = 0xab;
constexpr std::uint8_t kCmdDisableKeyboard = 0xad;
constexpr std::uint8_t kCmdEnableKeyboard = 0xae;
constexpr std::uint8_t kCmdReadOutputPort = 0xd0;
constexpr std::uint8_t kCmdWriteOutputPort = 0xd1;
constexpr std::uint8_t kCmdResetCpu = 0xfe;

constexpr std::uint8_t kSelfTestPassed = 0x55;

constexpr std::uint8_t kControlKeyboardInterrupt = 0x01;

// Scan code set 2: left Ctrl, left Alt and Delete (an extended key, 0xe0-prefixed) pressed,
// then released in reverse (0xf0 marks a release).
constexpr std::array<std::uint8_t, 11> kCtrlAltDel = {0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0,
                                                      0x71, 0xf0, 0x11, 0xf0, 0x14};

}  // namespace

I8042::I8042(const base::EventFd* reset_event, const base::EventFd* keyboard_irq)
    : reset_event_(reset_event),
      keyboard_irq_(keyboard_irq),
      resets_(base::MetricsRegistry::Global().Get("i8042", "reset_count")),
      keystrokes_(base::MetricsRegistry::Global().Get("i8042", "ctrl_alt_del_count")) {}

absl::Status I8042::SendCtrlAltDel() {
  std::lock_guard lock(mu_);
  if (output_.size() + kCtrlAltDel.size() > kOutputCapacity) {
    return absl::ResourceExhaustedError(
        "i8042: the guest has not read the keyboard's earlier bytes; Ctrl-Alt-Del not sent");
  }
  output_.insert(output_.end(), kCtrlAltDel.begin(), kCtrlAltDel.end());
  status_ |= kStatusOutputFull;
  keystrokes_->Add();
  RaiseKeyboardIrqIfPending();
  return absl::OkStatus();
}

void I8042::RaiseKeyboardIrqIfPending() {
  if (keyboard_irq_ != nullptr && !output_.empty() && (control_ & kControlKeyboardInterrupt)) {
    keyboard_irq_->Signal();
  }
}

void I8042::Read(std::uint64_t offset, std::span<std::uint8_t> data) {
  if (data.size() != 1) return;
  std::lock_guard lock(mu_);
  switch (offset) {
    case kDataPort:
      // An empty buffer reads 0.
      data[0] = output_.empty() ? 0 : output_.front();
      if (!output_.empty()) output_.pop_front();
      if (output_.empty()) {
        status_ &= static_cast<std::uint8_t>(~kStatusOutputFull);
      } else {
        RaiseKeyboardIrqIfPending();
      }
      break;
    case kCommandPort:
      data[0] = status_;
      break;
    default:
      data[0] = 0;  // port 0x61 and friends: nothing there worth emulating
  }
}

void I8042::Write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (data.size() != 1) return;
  std::lock_guard lock(mu_);
  if (offset == kCommandPort) {
    status_ |= kStatusCommandByte;
    Command(data[0]);
  } else if (offset == kDataPort) {
    status_ &= static_cast<std::uint8_t>(~kStatusCommandByte);
    if (pending_command_ == kCmdWriteControl) control_ = data[0];
    // Anything else (keyboard commands, output-port writes) is accepted and ignored.
    pending_command_ = 0;
  }
}

void I8042::Command(std::uint8_t command) {
  pending_command_ = 0;
  switch (command) {
    case kCmdReadControl: Output(control_); break;
    case kCmdWriteControl:
    case kCmdWriteOutputPort: pending_command_ = command; break;
    case kCmdSelfTest: Output(kSelfTestPassed); break;
    case kCmdInterfaceTest: Output(0x00); break;
    case kCmdReadOutputPort: Output(0x01); break;  // A20 and the reset line inactive
    case kCmdResetCpu:
      resets_->Add();
      reset_event_->Signal();
      break;
    case kCmdDisableAux:
    case kCmdEnableAux:
    case kCmdDisableKeyboard:
    case kCmdEnableKeyboard:
    default:
      break;
  }
}

void I8042::Output(std::uint8_t byte) {
  output_.assign(1, byte);
  status_ |= kStatusOutputFull;
}

}  // namespace ember::devices
