#include "vmm/vcpu_runner.h"

#include <pthread.h>
#include <signal.h>

#include <cstring>
#include <optional>
#include <string>

#include "vmm/base/clock.h"
#include "vmm/base/logging.h"
#include "vmm/seccomp.h"

namespace ember::vmm {
namespace {

// Real-time signal used only to interrupt KVM_RUN; glibc reserves SIGRTMIN..SIGRTMIN+2.
int KickSignal() { return SIGRTMIN + 3; }

void NoOpHandler(int) {}

std::string Hex(std::uint64_t value) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(value));
  return buf;
}

}  // namespace

VcpuRunner::VcpuRunner(kvm::Vcpu vcpu, const Bus* pio_bus, const Bus* mmio_bus,
                       std::uint64_t start_us, ExitCallback on_exit)
    : vcpu_(std::move(vcpu)),
      pio_bus_(pio_bus),
      mmio_bus_(mmio_bus),
      start_us_(start_us),
      on_exit_(std::move(on_exit)) {
  auto& registry = base::MetricsRegistry::Global();
  std::string group = "vcpu" + std::to_string(vcpu_.id());
  exits_io_ = registry.Get(group, "exit_io_count");
  exits_mmio_ = registry.Get(group, "exit_mmio_count");
  exits_other_ = registry.Get(group, "exit_other_count");
  first_instruction_us_ = registry.Get("vmm", "start_to_first_instruction_us");
}

VcpuRunner::~VcpuRunner() { Stop(); }

void VcpuRunner::InstallKickSignalHandler() {
  struct sigaction action {};
  action.sa_handler = NoOpHandler;  // its only job is to make KVM_RUN return EINTR
  sigemptyset(&action.sa_mask);
  sigaction(KickSignal(), &action, nullptr);
}

void VcpuRunner::Start() {
  thread_ = std::thread([this] {
    ThreadMain();
    std::lock_guard lock(pause_mu_);
    finished_ = true;  // a Pause() waiting on a vCPU that ended the VM must not hang
    pause_cv_.notify_all();
  });
}

void VcpuRunner::Stop() {
  if (!thread_.joinable()) return;
  RequestStop();
  thread_.join();
}

void VcpuRunner::RequestStop() {
  if (!thread_.joinable()) return;
  stop_requested_.store(true);
  {
    std::lock_guard lock(pause_mu_);
    pause_cv_.notify_all();  // a parked vCPU wakes up to stop
  }
  // immediate_exit covers the window where the thread is about to enter KVM_RUN; the signal
  // covers a run already in progress.
  vcpu_.RequestImmediateExit();
  pthread_kill(thread_.native_handle(), KickSignal());
}

void VcpuRunner::Pause() {
  std::unique_lock lock(pause_mu_);
  if (!thread_.joinable()) return;
  pause_requested_ = true;
  // immediate_exit makes KVM finish a pending port/MMIO access and return without running
  // guest code, so the parked state is at an instruction boundary (KVM API, KVM_RUN).
  vcpu_.RequestImmediateExit();
  pthread_kill(thread_.native_handle(), KickSignal());
  pause_cv_.wait(lock, [this] { return parked_ || finished_ || stop_requested_.load(); });
}

void VcpuRunner::Resume() {
  std::lock_guard lock(pause_mu_);
  pause_requested_ = false;
  pause_cv_.notify_all();
}

void VcpuRunner::Park() {
  std::unique_lock lock(pause_mu_);
  if (!pause_requested_) return;
  parked_ = true;
  pause_cv_.notify_all();
  pause_cv_.wait(lock, [this] { return !pause_requested_ || stop_requested_.load(); });
  parked_ = false;
}

void VcpuRunner::ThreadMain() {
  base::SetThreadName("vcpu" + std::to_string(vcpu_.id()));
  sigset_t kick;
  sigemptyset(&kick);
  sigaddset(&kick, KickSignal());
  pthread_sigmask(SIG_UNBLOCK, &kick, nullptr);
  if (auto status = InstallThreadSeccomp(jailer::VmmThreadKind::kVcpu); !status.ok()) {
    on_exit_({kExitError, std::string(status.message())});
    return;
  }

  bool first_run = true;
  while (!stop_requested_.load()) {
    if (first_run && vcpu_.id() == 0) {
      std::uint64_t elapsed = base::MonotonicMicros() - start_us_;
      first_instruction_us_->Set(elapsed);
      EMBER_LOG(kDebug) << "entering the guest " << elapsed << " us after start";
    }
    first_run = false;
    auto result = vcpu_.Run();
    if (!result.ok()) {
      on_exit_({kExitError, std::string(result.status().message())});
      return;
    }
    if (*result == kvm::Vcpu::RunResult::kInterrupted) {
      vcpu_.ClearImmediateExit();
      Park();     // returns at once unless a pause was requested
      continue;  // the loop condition decides whether we were asked to stop
    }
    if (std::optional<VmExit> exit = HandleExit()) {
      on_exit_(std::move(*exit));
      return;
    }
  }
}

void VcpuRunner::HandleIo(kvm_run* run) {
  exits_io_->Add();
  // The data for `count` accesses of `size` bytes sits in the kvm_run page at data_offset.
  auto* data = reinterpret_cast<std::uint8_t*>(run) + run->io.data_offset;  // KVM's layout
  for (std::uint32_t i = 0; i < run->io.count; ++i) {
    std::span<std::uint8_t> bytes(data + i * run->io.size, run->io.size);
    if (run->io.direction == KVM_EXIT_IO_OUT) {
      pio_bus_->Write(run->io.port, bytes);
    } else {
      pio_bus_->Read(run->io.port, bytes);
    }
  }
}

void VcpuRunner::HandleMmio(kvm_run* run) {
  exits_mmio_->Add();
  std::span<std::uint8_t> bytes(run->mmio.data, std::min<std::size_t>(run->mmio.len, 8));
  if (run->mmio.is_write) {
    mmio_bus_->Write(run->mmio.phys_addr, bytes);
  } else {
    mmio_bus_->Read(run->mmio.phys_addr, bytes);
  }
}

std::optional<VmExit> VcpuRunner::HandleExit() {
  kvm_run* run = vcpu_.run_state();
  const std::string who = "vcpu" + std::to_string(vcpu_.id());
  switch (run->exit_reason) {
    case KVM_EXIT_IO:
      HandleIo(run);
      return std::nullopt;
    case KVM_EXIT_MMIO:
      HandleMmio(run);
      return std::nullopt;
    case KVM_EXIT_INTR:
      return std::nullopt;
    case KVM_EXIT_HLT:
      exits_other_->Add();
      return VmExit{kExitOk, who + " halted"};
    case KVM_EXIT_SHUTDOWN: {
      exits_other_->Add();
      auto regs = vcpu_.GetRegs();
      return VmExit{kExitTripleFault, "guest triple fault on " + who + " (KVM_EXIT_SHUTDOWN) at rip " +
                                          (regs.ok() ? Hex(regs->rip) : std::string("?"))};
    }
    case KVM_EXIT_SYSTEM_EVENT:
      exits_other_->Add();
      if (run->system_event.type == KVM_SYSTEM_EVENT_CRASH) {
        return VmExit{kExitUnexpectedExit, "guest reported a crash on " + who};
      }
      return VmExit{kExitOk, "guest requested shutdown or reset on " + who};
    case KVM_EXIT_FAIL_ENTRY:
      exits_other_->Add();
      return VmExit{kExitKvmFailEntry,
                    "KVM failed to enter the guest on " + who + ": hardware reason " +
                        Hex(run->fail_entry.hardware_entry_failure_reason)};
    case KVM_EXIT_INTERNAL_ERROR: {
      exits_other_->Add();
      auto regs = vcpu_.GetRegs();
      std::string kind = run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION
                             ? "instruction emulation failed"
                             : "suberror " + std::to_string(run->internal.suberror);
      return VmExit{kExitKvmInternalError, "KVM internal error on " + who + ": " + kind +
                                               " at rip " +
                                               (regs.ok() ? Hex(regs->rip) : std::string("?"))};
    }
    default:
      exits_other_->Add();
      return VmExit{kExitUnexpectedExit,
                    "unexpected KVM exit reason " + std::to_string(run->exit_reason) + " on " + who};
  }
}

}  // namespace ember::vmm
