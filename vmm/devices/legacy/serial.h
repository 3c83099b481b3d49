#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <vector>

#include "vmm/base/bus_device.h"
#include "vmm/base/event_fd.h"
#include "vmm/base/metrics.h"

namespace ember::devices {

// A 16550A-compatible UART (what Linux's 8250 driver expects at COM1): transmit goes
// straight to the output fd, so the transmitter always reads as empty; receive has a
// 64-byte FIFO fed by the VMM thread. Register accesses come from vCPU threads and input
// from the VMM thread, so all state is under mu_.
class Serial : public base::BusDevice {
 public:
  static constexpr std::size_t kFifoSize = 64;
  // What the console may take unless the VM config says otherwise (console.max_bytes).
  static constexpr std::uint64_t kDefaultMaxOutputBytes = std::uint64_t{16} << 20;

  // `out_fd` (borrowed, must outlive the device) receives the guest's output, at most
  // `max_output_bytes` of it: the guest decides how much it writes, and the console file
  // must not fill the host's disk. Bytes past the cap are dropped and counted (metric
  // uart.bytes_over_cap); the guest sees its transmitter empty as always. `irq` (borrowed
  // irqfd) is signalled on an interrupt; `rx_space` (borrowed, may be null) is signalled
  // when the guest takes bytes out of a FIFO so the VMM can feed it more.
  Serial(int out_fd, const base::EventFd* irq, const base::EventFd* rx_space,
         std::uint64_t max_output_bytes = kDefaultMaxOutputBytes);

  void Read(std::uint64_t offset, std::span<std::uint8_t> data) override;
  void Write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

  // Queues guest input; returns how many bytes fitted in the FIFO. VMM thread.
  std::size_t EnqueueInput(std::span<const std::uint8_t> bytes);

  // Register and FIFO state, for snapshots; the output fd is not part of it.
  struct State {
    std::vector<std::uint8_t> rx_fifo;
    std::uint8_t ier, lcr, mcr, scratch, divisor_low, divisor_high;
    bool thr_empty_pending;
  };
  [[nodiscard]] State Save();
  void Restore(const State& state);

 private:
  std::uint8_t ReadRegister(std::uint64_t offset);
  void WriteRegister(std::uint64_t offset, std::uint8_t value);
  void Transmit(std::uint8_t byte);
  // Recomputes the pending interrupt and signals the irqfd when one becomes due.
  void UpdateInterrupt();
  bool Loopback() const;

  const int out_fd_;
  const base::EventFd* const irq_;
  const base::EventFd* const rx_space_;
  const std::uint64_t max_output_bytes_;
  base::Metric* tx_bytes_;
  base::Metric* rx_bytes_;
  base::Metric* missed_writes_;
  base::Metric* bytes_over_cap_;

  std::mutex mu_;
  std::deque<std::uint8_t> rx_fifo_;  // guarded by mu_
  std::uint8_t ier_ = 0;              // guarded by mu_
  std::uint8_t lcr_ = 0x03;           // guarded by mu_ (8N1)
  std::uint8_t mcr_ = 0x08;           // guarded by mu_ (OUT2)
  std::uint8_t scratch_ = 0;          // guarded by mu_
  std::uint8_t divisor_low_ = 0x0c;   // guarded by mu_ (9600 baud)
  std::uint8_t divisor_high_ = 0;     // guarded by mu_
  bool thr_empty_pending_ = false;    // guarded by mu_: THRE interrupt not yet acknowledged
  std::uint64_t output_bytes_ = 0;    // guarded by mu_: written to out_fd_ so far
};

}  // namespace ember::devices
