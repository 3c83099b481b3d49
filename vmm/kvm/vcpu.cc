#include "vmm/kvm/vcpu.h"

#include <sys/ioctl.h>

#include <atomic>
#include <cerrno>
#include <string>

#include "absl/strings/str_format.h"
#include "vmm/base/status.h"
#include "vmm/kvm/kvm_abi.h"

namespace ember::kvm {
namespace {

constexpr std::size_t kMaxCpuidEntries = 256;

// Runs one state ioctl on `fd`, naming the ioctl and the vCPU on failure.
absl::Status StateIoctl(int fd, unsigned long request, void* arg, const char* name,
                        std::uint32_t vcpu_id) {
  if (::ioctl(fd, request, arg) != 0) {
    return base::ErrnoError(std::string("ioctl(") + name + ")", "vcpu " + std::to_string(vcpu_id));
  }
  return absl::OkStatus();
}

#define EMBER_VCPU_IOCTL(request, arg) StateIoctl(fd_.Get(), request, arg, #request, id_)


}  // namespace

absl::StatusOr<Vcpu::RunResult> Vcpu::Run() {
  if (::ioctl(fd_.Get(), KVM_RUN, 0) == 0) return RunResult::kExited;
  if (errno == EINTR || errno == EAGAIN) return RunResult::kInterrupted;
  return base::ErrnoError("ioctl(KVM_RUN)", "vcpu " + std::to_string(id_));
}

void Vcpu::RequestImmediateExit() const {
  std::atomic_ref<std::uint8_t>(run_state()->immediate_exit).store(1);
}

void Vcpu::ClearImmediateExit() const {
  std::atomic_ref<std::uint8_t>(run_state()->immediate_exit).store(0);
}

absl::StatusOr<kvm_regs> Vcpu::GetRegs() const {
  kvm_regs regs{};
  EMBER_RETURN_IF_ERROR(EMBER_VCPU_IOCTL(KVM_GET_REGS, &regs));
  return regs;
}

absl::Status Vcpu::SetRegs(const kvm_regs& regs) const {
  return EMBER_VCPU_IOCTL(KVM_SET_REGS, const_cast<kvm_regs*>(&regs));
}

absl::StatusOr<kvm_sregs> Vcpu::GetSregs() const {
  kvm_sregs sregs{};
  EMBER_RETURN_IF_ERROR(EMBER_VCPU_IOCTL(KVM_GET_SREGS, &sregs));
  return sregs;
}

absl::Status Vcpu::SetSregs(const kvm_sregs& sregs) const {
  return EMBER_VCPU_IOCTL(KVM_SET_SREGS, const_cast<kvm_sregs*>(&sregs));
}

absl::Status Vcpu::SetFpu(const kvm_fpu& fpu) const {
  return EMBER_VCPU_IOCTL(KVM_SET_FPU, const_cast<kvm_fpu*>(&fpu));
}

absl::Status Vcpu::SetCpuid(std::span<const kvm_cpuid_entry2> entries) const {
  FlexBuffer<kvm_cpuid_entry2> cpuid(entries);
  return StateIoctl(fd_.Get(), kSetCpuid2, cpuid.data(), "KVM_SET_CPUID2", id_);
}

absl::StatusOr<std::vector<kvm_cpuid_entry2>> Vcpu::GetCpuid() const {
  FlexBuffer<kvm_cpuid_entry2> cpuid(kMaxCpuidEntries);
  EMBER_RETURN_IF_ERROR(StateIoctl(fd_.Get(), kGetCpuid2, cpuid.data(), "KVM_GET_CPUID2", id_));
  return cpuid.Entries();
}

absl::Status Vcpu::SetMsrs(std::span<const kvm_msr_entry> entries) const {
  FlexBuffer<kvm_msr_entry> msrs(entries);
  // KVM_SET_MSRS returns how many entries it set; anything short is an error.
  int set = ::ioctl(fd_.Get(), kSetMsrs, msrs.data());
  if (set < 0) return base::ErrnoError("ioctl(KVM_SET_MSRS)", "vcpu " + std::to_string(id_));
  if (static_cast<std::size_t>(set) != entries.size()) {
    return absl::InternalError("KVM_SET_MSRS on vcpu " + std::to_string(id_) +
                               " rejected MSR " +
                               absl::StrFormat("0x%x", entries[static_cast<std::size_t>(set)].index));
  }
  return absl::OkStatus();
}

absl::StatusOr<kvm_lapic_state> Vcpu::GetLapic() const {
  kvm_lapic_state lapic{};
  EMBER_RETURN_IF_ERROR(EMBER_VCPU_IOCTL(KVM_GET_LAPIC, &lapic));
  return lapic;
}

absl::Status Vcpu::SetLapic(const kvm_lapic_state& lapic) const {
  return EMBER_VCPU_IOCTL(KVM_SET_LAPIC, const_cast<kvm_lapic_state*>(&lapic));
}

absl::Status Vcpu::SetMpState(const kvm_mp_state& state) const {
  return EMBER_VCPU_IOCTL(KVM_SET_MP_STATE, const_cast<kvm_mp_state*>(&state));
}

absl::StatusOr<kvm_fpu> Vcpu::GetFpu() const {
  kvm_fpu fpu{};
  EMBER_RETURN_IF_ERROR(EMBER_VCPU_IOCTL(KVM_GET_FPU, &fpu));
  return fpu;
}

absl::StatusOr<std::vector<std::uint8_t>> Vcpu::GetXsave(std::size_t size) const {
  std::vector<std::uint8_t> xsave(std::max(size, sizeof(XsaveArea)));
  unsigned long request = xsave.size() > sizeof(XsaveArea) ? kGetXsave2 : kGetXsave;
  EMBER_RETURN_IF_ERROR(StateIoctl(fd_.Get(), request, xsave.data(), "KVM_GET_XSAVE", id_));
  return xsave;
}

absl::Status Vcpu::SetXsave(std::span<const std::uint8_t> xsave) const {
  if (xsave.size() < sizeof(XsaveArea)) {
    return absl::InvalidArgumentError("XSAVE image of " + std::to_string(xsave.size()) +
                                      " bytes is too short");
  }
  std::vector<std::uint8_t> copy(xsave.begin(), xsave.end());  // the ioctl takes a mutable buffer
  return StateIoctl(fd_.Get(), kSetXsave, copy.data(), "KVM_SET_XSAVE", id_);
}

absl::StatusOr<kvm_xcrs> Vcpu::GetXcrs() const {
  kvm_xcrs xcrs{};
  EMBER_RETURN_IF_ERROR(EMBER_VCPU_IOCTL(KVM_GET_XCRS, &xcrs));
  return xcrs;
}

absl::Status Vcpu::SetXcrs(const kvm_xcrs& xcrs) const {
  return EMBER_VCPU_IOCTL(KVM_SET_XCRS, const_cast<kvm_xcrs*>(&xcrs));
}

absl::StatusOr<kvm_vcpu_events> Vcpu::GetVcpuEvents() const {
  kvm_vcpu_events events{};
  EMBER_RETURN_IF_ERROR(EMBER_VCPU_IOCTL(KVM_GET_VCPU_EVENTS, &events));
  return events;
}

absl::Status Vcpu::SetVcpuEvents(const kvm_vcpu_events& events) const {
  return EMBER_VCPU_IOCTL(KVM_SET_VCPU_EVENTS, const_cast<kvm_vcpu_events*>(&events));
}

absl::StatusOr<kvm_debugregs> Vcpu::GetDebugRegs() const {
  kvm_debugregs regs{};
  EMBER_RETURN_IF_ERROR(EMBER_VCPU_IOCTL(KVM_GET_DEBUGREGS, &regs));
  return regs;
}

absl::Status Vcpu::SetDebugRegs(const kvm_debugregs& regs) const {
  return EMBER_VCPU_IOCTL(KVM_SET_DEBUGREGS, const_cast<kvm_debugregs*>(&regs));
}

absl::StatusOr<std::vector<kvm_msr_entry>> Vcpu::GetMsrs(
    std::span<const std::uint32_t> indices) const {
  std::vector<kvm_msr_entry> wanted;
  for (std::uint32_t index : indices) wanted.push_back({index, 0, 0});
  std::vector<kvm_msr_entry> read;
  // KVM_GET_MSRS stops at the first MSR it cannot read and returns how many it read: take
  // those, skip the unreadable one, and go on.
  std::size_t pos = 0;
  while (pos < wanted.size()) {
    FlexBuffer<kvm_msr_entry> msrs(std::span<const kvm_msr_entry>(wanted).subspan(pos));
    int n = ::ioctl(fd_.Get(), kGetMsrs, msrs.data());
    if (n < 0) return base::ErrnoError("ioctl(KVM_GET_MSRS)", "vcpu " + std::to_string(id_));
    std::vector<kvm_msr_entry> got = msrs.Entries();
    read.insert(read.end(), got.begin(), got.begin() + n);
    pos += static_cast<std::size_t>(n) + 1;
  }
  return read;
}

absl::StatusOr<kvm_mp_state> Vcpu::GetMpState() const {
  kvm_mp_state state{};
  EMBER_RETURN_IF_ERROR(EMBER_VCPU_IOCTL(KVM_GET_MP_STATE, &state));
  return state;
}

}  // namespace ember::kvm
