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

absl::StatusOr<kvm_mp_state> Vcpu::GetMpState() const {
  kvm_mp_state state{};
  EMBER_RETURN_IF_ERROR(EMBER_VCPU_IOCTL(KVM_GET_MP_STATE, &state));
  return state;
}

}  // namespace ember::kvm
