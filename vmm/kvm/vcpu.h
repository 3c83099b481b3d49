#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/base/mmap_region.h"
#include "vmm/base/unique_fd.h"

namespace ember::kvm {

// One KVM vCPU: its fd and the kvm_run area shared with the kernel. Set up by the builder
// on the VMM thread, then owned and run by exactly one vCPU thread. The only thing other
// threads may touch is RequestImmediateExit().
class Vcpu {
 public:
  enum class RunResult { kExited, kInterrupted };

  // Enters the guest until the next exit that needs user space. kInterrupted means a signal
  // (or a pending immediate-exit request) cut the run short; kvm_run holds no exit then.
  [[nodiscard]] absl::StatusOr<RunResult> Run();
  [[nodiscard]] kvm_run* run_state() const {
    return reinterpret_cast<kvm_run*>(run_.data());  // the mapping is the kernel's kvm_run
  }
  // Makes the current or next KVM_RUN return at once. Any thread; pair with a signal to
  // the vCPU thread so a run in progress ends too.
  void RequestImmediateExit() const;
  void ClearImmediateExit() const;

  [[nodiscard]] absl::StatusOr<kvm_regs> GetRegs() const;
  [[nodiscard]] absl::Status SetRegs(const kvm_regs& regs) const;
  [[nodiscard]] absl::StatusOr<kvm_sregs> GetSregs() const;
  [[nodiscard]] absl::Status SetSregs(const kvm_sregs& sregs) const;
  [[nodiscard]] absl::Status SetFpu(const kvm_fpu& fpu) const;
  [[nodiscard]] absl::Status SetCpuid(std::span<const kvm_cpuid_entry2> entries) const;
  [[nodiscard]] absl::StatusOr<std::vector<kvm_cpuid_entry2>> GetCpuid() const;
  [[nodiscard]] absl::Status SetMsrs(std::span<const kvm_msr_entry> entries) const;
  [[nodiscard]] absl::StatusOr<kvm_lapic_state> GetLapic() const;
  [[nodiscard]] absl::Status SetLapic(const kvm_lapic_state& lapic) const;
  [[nodiscard]] absl::StatusOr<kvm_mp_state> GetMpState() const;
  [[nodiscard]] absl::Status SetMpState(const kvm_mp_state& state) const;

  // The rest of the architectural state, for snapshots. Only while the vCPU is paused.
  [[nodiscard]] absl::StatusOr<kvm_fpu> GetFpu() const;
  // The XSAVE image, `size` bytes (4096, or KVM_CAP_XSAVE2's size when the host has more).
  [[nodiscard]] absl::StatusOr<std::vector<std::uint8_t>> GetXsave(std::size_t size) const;
  [[nodiscard]] absl::Status SetXsave(std::span<const std::uint8_t> xsave) const;
  [[nodiscard]] absl::StatusOr<kvm_xcrs> GetXcrs() const;
  [[nodiscard]] absl::Status SetXcrs(const kvm_xcrs& xcrs) const;
  [[nodiscard]] absl::StatusOr<kvm_vcpu_events> GetVcpuEvents() const;
  [[nodiscard]] absl::Status SetVcpuEvents(const kvm_vcpu_events& events) const;
  [[nodiscard]] absl::StatusOr<kvm_debugregs> GetDebugRegs() const;
  [[nodiscard]] absl::Status SetDebugRegs(const kvm_debugregs& regs) const;
  // Reads the MSRs in `indices`; the result holds those KVM could read, in order.
  [[nodiscard]] absl::StatusOr<std::vector<kvm_msr_entry>> GetMsrs(
      std::span<const std::uint32_t> indices) const;

  [[nodiscard]] std::uint32_t id() const { return id_; }
  [[nodiscard]] int fd() const { return fd_.Get(); }

 private:
  friend class Vm;
  Vcpu(std::uint32_t id, base::UniqueFd fd, base::MmapRegion run)
      : id_(id), fd_(std::move(fd)), run_(std::move(run)) {}

  std::uint32_t id_;
  base::UniqueFd fd_;
  base::MmapRegion run_;
};

}  // namespace ember::kvm
