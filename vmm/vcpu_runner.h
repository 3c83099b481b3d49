#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <cstdint>
#include <functional>
#include <optional>
#include <thread>

#include "vmm/base/metrics.h"
#include "vmm/bus.h"
#include "vmm/exit_code.h"
#include "vmm/kvm/vcpu.h"

namespace ember::vmm {

// Runs one vCPU on its own thread: KVM_RUN, dispatching port and MMIO exits to the buses,
// until the guest ends or Stop() is called. Created and stopped by the Vmm on the VMM
// thread; everything else happens on the vCPU thread.
class VcpuRunner {
 public:
  // Called once, on the vCPU thread, when this vCPU ends the VM (triple fault, KVM error,
  // unknown exit). Must not block.
  using ExitCallback = std::function<void(VmExit)>;

  // Buses are borrowed and must outlive the runner. `start_us`: the start command's
  // CLOCK_MONOTONIC µs, for the first-instruction metric.
  VcpuRunner(kvm::Vcpu vcpu, const Bus* pio_bus, const Bus* mmio_bus, std::uint64_t start_us,
             ExitCallback on_exit);
  ~VcpuRunner();
  VcpuRunner(const VcpuRunner&) = delete;
  VcpuRunner& operator=(const VcpuRunner&) = delete;

  // Installs the process-wide handler for the kick signal. Call once before any Start().
  static void InstallKickSignalHandler();

  void Start();
  // Makes the vCPU leave the guest and its thread end; returns once it has. Idempotent.
  void Stop();
  // Stop() without waiting: the thread leaves KVM_RUN before running guest code again, even
  // if it first waits on something else (a page fault served by another process).
  void RequestStop();
  // Stops the vCPU at an instruction boundary (any pending port/MMIO access completed) and
  // returns once it is parked, so its state can be read. Resume() lets it run on.
  void Pause();
  void Resume();

  [[nodiscard]] const kvm::Vcpu& vcpu() const { return vcpu_; }

 private:
  void ThreadMain();
  // Handles one exit; returns the VM's end when this exit ends it.
  std::optional<VmExit> HandleExit();
  void HandleIo(kvm_run* run);
  void HandleMmio(kvm_run* run);

  kvm::Vcpu vcpu_;
  const Bus* const pio_bus_;
  const Bus* const mmio_bus_;
  const std::uint64_t start_us_;
  ExitCallback on_exit_;
  std::thread thread_;
  std::atomic<bool> stop_requested_{false};

  // Pause handshake between the VMM thread (Pause/Resume) and the vCPU thread (Park).
  void Park();
  std::mutex pause_mu_;
  std::condition_variable pause_cv_;
  bool pause_requested_ = false;  // guarded by pause_mu_
  bool parked_ = false;           // guarded by pause_mu_
  bool finished_ = false;         // guarded by pause_mu_: the thread has returned

  base::Metric* exits_io_;
  base::Metric* exits_mmio_;
  base::Metric* exits_other_;
  base::Metric* first_instruction_us_;
};

}  // namespace ember::vmm
