#include "vmm/devices/legacy/serial.h"

#include <unistd.h>

#include "vmm/base/logging.h"

namespace ember::devices {
namespace {

// Register offsets from the base port (the divisor latch overlays 0 and 1 when DLAB is set).
constexpr std::uint64_t kData = 0;
constexpr std::uint64_t kIer = 1;
constexpr std::uint64_t kIirFcr = 2;
constexpr std::uint64_t kLcr = 3;
constexpr std::uint64_t kMcr = 4;
constexpr std::uint64_t kLsr = 5;
constexpr std::uint64_t kMsr = 6;
constexpr std::uint64_t kScratch = 7;

constexpr std::uint8_t kLcrDlab = 0x80;
constexpr std::uint8_t kIerRxAvailable = 0x01;
constexpr std::uint8_t kIerTxEmpty = 0x02;
constexpr std::uint8_t kIirNone = 0x01;
constexpr std::uint8_t kIirTxEmpty = 0x02;
constexpr std::uint8_t kIirRxAvailable = 0x04;
constexpr std::uint8_t kIirFifoEnabled = 0xc0;
constexpr std::uint8_t kLsrDataReady = 0x01;
constexpr std::uint8_t kLsrTxEmpty = 0x20 | 0x40;  // THR empty and transmitter idle
constexpr std::uint8_t kMcrLoop = 0x10;
// With no modem attached the lines read as carrier, data-set-ready and clear-to-send.
constexpr std::uint8_t kMsrIdle = 0x80 | 0x20 | 0x10;

}  // namespace

Serial::Serial(int out_fd, const base::EventFd* irq, const base::EventFd* rx_space,
               std::uint64_t max_output_bytes)
    : out_fd_(out_fd),
      irq_(irq),
      rx_space_(rx_space),
      max_output_bytes_(max_output_bytes),
      tx_bytes_(base::MetricsRegistry::Global().Get("uart", "write_count")),
      rx_bytes_(base::MetricsRegistry::Global().Get("uart", "read_count")),
      missed_writes_(base::MetricsRegistry::Global().Get("uart", "missed_write_count")),
      bytes_over_cap_(base::MetricsRegistry::Global().Get("uart", "bytes_over_cap")) {}

void Serial::Read(std::uint64_t offset, std::span<std::uint8_t> data) {
  if (data.size() != 1) {  // the UART's registers are byte-wide
    std::fill(data.begin(), data.end(), 0xff);
    return;
  }
  std::lock_guard lock(mu_);
  data[0] = ReadRegister(offset);
}

void Serial::Write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (data.size() != 1) return;
  std::lock_guard lock(mu_);
  WriteRegister(offset, data[0]);
}

std::size_t Serial::EnqueueInput(std::span<const std::uint8_t> bytes) {
  std::lock_guard lock(mu_);
  std::size_t n = std::min(bytes.size(), kFifoSize - rx_fifo_.size());
  rx_fifo_.insert(rx_fifo_.end(), bytes.begin(), bytes.begin() + static_cast<long>(n));
  if (n > 0) UpdateInterrupt();
  return n;
}

Serial::State Serial::Save() {
  std::lock_guard lock(mu_);
  return {std::vector<std::uint8_t>(rx_fifo_.begin(), rx_fifo_.end()),
          ier_, lcr_, mcr_, scratch_, divisor_low_, divisor_high_, thr_empty_pending_};
}

void Serial::Restore(const State& state) {
  std::lock_guard lock(mu_);
  std::size_t n = std::min(state.rx_fifo.size(), kFifoSize);
  rx_fifo_.assign(state.rx_fifo.begin(), state.rx_fifo.begin() + static_cast<long>(n));
  ier_ = state.ier;
  lcr_ = state.lcr;
  mcr_ = state.mcr;
  scratch_ = state.scratch;
  divisor_low_ = state.divisor_low;
  divisor_high_ = state.divisor_high;
  thr_empty_pending_ = state.thr_empty_pending;
}

bool Serial::Loopback() const { return (mcr_ & kMcrLoop) != 0; }

std::uint8_t Serial::ReadRegister(std::uint64_t offset) {
  bool dlab = (lcr_ & kLcrDlab) != 0;
  switch (offset) {
    case kData: {
      if (dlab) return divisor_low_;
      if (rx_fifo_.empty()) return 0;
      std::uint8_t byte = rx_fifo_.front();
      rx_fifo_.pop_front();
      rx_bytes_->Add();
      if (rx_space_ != nullptr) rx_space_->Signal();
      UpdateInterrupt();
      return byte;
    }
    case kIer:
      return dlab ? divisor_high_ : ier_;
    case kIirFcr: {
      std::uint8_t iir = kIirNone;
      if ((ier_ & kIerRxAvailable) && !rx_fifo_.empty()) {
        iir = kIirRxAvailable;
      } else if ((ier_ & kIerTxEmpty) && thr_empty_pending_) {
        iir = kIirTxEmpty;
        thr_empty_pending_ = false;  // reading IIR acknowledges a THRE interrupt
      }
      return iir | kIirFifoEnabled;
    }
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr:
      return kLsrTxEmpty | (rx_fifo_.empty() ? 0 : kLsrDataReady);
    case kMsr:
      if (Loopback()) {
        // Loopback wires DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD; Linux's probe checks this.
        return static_cast<std::uint8_t>(((mcr_ & 0x01) << 5) | ((mcr_ & 0x02) << 3) |
                                         ((mcr_ & 0x04) << 4) | ((mcr_ & 0x08) << 4));
      }
      return kMsrIdle;
    case kScratch:
      return scratch_;
    default:
      return 0xff;
  }
}

void Serial::WriteRegister(std::uint64_t offset, std::uint8_t value) {
  bool dlab = (lcr_ & kLcrDlab) != 0;
  switch (offset) {
    case kData:
      if (dlab) {
        divisor_low_ = value;
      } else if (Loopback()) {
        if (rx_fifo_.size() < kFifoSize) rx_fifo_.push_back(value);
        UpdateInterrupt();
      } else {
        Transmit(value);
      }
      break;
    case kIer:
      if (dlab) {
        divisor_high_ = value;
      } else {
        // Enabling the THRE interrupt with an empty transmitter raises it at once.
        if ((value & kIerTxEmpty) && !(ier_ & kIerTxEmpty)) thr_empty_pending_ = true;
        ier_ = value & 0x0f;
        UpdateInterrupt();
      }
      break;
    case kIirFcr:
      if (value & 0x02) rx_fifo_.clear();  // FCR: clear receive FIFO
      break;
    case kLcr:
      lcr_ = value;
      break;
    case kMcr:
      mcr_ = value & 0x1f;
      break;
    case kScratch:
      scratch_ = value;
      break;
    default:
      break;  // LSR and MSR are read-only
  }
}

void Serial::Transmit(std::uint8_t byte) {
  // Console output is best effort: a closed or full output, or one at its cap, must not
  // stall the guest.
  if (output_bytes_ >= max_output_bytes_) {
    bytes_over_cap_->Add();
  } else if (::write(out_fd_, &byte, 1) == 1) {
    tx_bytes_->Add();
    if (++output_bytes_ == max_output_bytes_) {
      EMBER_LOG(kWarn) << "the guest's console reached its cap of " << max_output_bytes_
                       << " bytes (console.max_bytes); later output is dropped and counted "
                          "in metrics (uart.bytes_over_cap)";
    }
  } else {
    missed_writes_->Add();
  }
  thr_empty_pending_ = true;
  UpdateInterrupt();
}

void Serial::UpdateInterrupt() {
  bool rx = (ier_ & kIerRxAvailable) && !rx_fifo_.empty();
  bool tx = (ier_ & kIerTxEmpty) && thr_empty_pending_;
  // OUT2 gates the UART's interrupt line on PCs; Linux sets it when it wants interrupts.
  if ((rx || tx) && (mcr_ & 0x08) && irq_ != nullptr) irq_->Signal();
}

}  // namespace ember::devices
