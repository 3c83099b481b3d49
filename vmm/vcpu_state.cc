#include "vmm/vcpu_state.h"

#include <cstring>
#include <string>

#include "absl/strings/str_format.h"
#include "vmm/base/status.h"

namespace ember::vmm {
namespace {

template <typename T>
std::string Bytes(const T& value) {
  static_assert(std::is_trivially_copyable_v<T>);
  return std::string(reinterpret_cast<const char*>(&value), sizeof(T));  // raw KVM struct
}

// The saved bytes of a KVM struct, checked for size: a state file from another build of
// the structs is refused rather than misread.
template <typename T>
absl::StatusOr<T> FromBytes(const std::string& bytes, const char* what) {
  if (bytes.size() != sizeof(T)) {
    return absl::InvalidArgumentError(absl::StrFormat("saved %s is %d bytes; expected %d", what,
                                                      bytes.size(), sizeof(T)));
  }
  T value;
  std::memcpy(&value, bytes.data(), sizeof(T));
  return value;
}

constexpr std::uint32_t kEcxHypervisor = 1u << 31;
constexpr std::uint32_t kEdxHtt = 1u << 28;

const kvm_cpuid_entry2* FindLeaf(std::span<const kvm_cpuid_entry2> cpuid, std::uint32_t function,
                                 std::uint32_t index) {
  for (const kvm_cpuid_entry2& e : cpuid) {
    if (e.function == function && e.index == index) return &e;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<v1::VcpuState> SaveVcpuState(const kvm::Vcpu& vcpu,
                                             std::span<const std::uint32_t> msr_list,
                                             std::size_t xsave_size,
                                             std::span<const kvm_cpuid_entry2> cpuid) {
  v1::VcpuState state;
  state.set_id(vcpu.id());
  EMBER_ASSIGN_OR_RETURN(kvm_regs regs, vcpu.GetRegs());
  state.set_regs(Bytes(regs));
  EMBER_ASSIGN_OR_RETURN(kvm_sregs sregs, vcpu.GetSregs());
  state.set_sregs(Bytes(sregs));
  if (auto xsave = vcpu.GetXsave(xsave_size); xsave.ok()) {
    state.set_xsave(std::string(xsave->begin(), xsave->end()));
    EMBER_ASSIGN_OR_RETURN(kvm_xcrs xcrs, vcpu.GetXcrs());
    state.set_xcrs(Bytes(xcrs));
  } else {
    // Hosts without XSAVE (or that refuse it) still have the legacy FPU state.
    EMBER_ASSIGN_OR_RETURN(kvm_fpu fpu, vcpu.GetFpu());
    state.set_fpu(Bytes(fpu));
  }
  EMBER_ASSIGN_OR_RETURN(std::vector<kvm_msr_entry> msrs, vcpu.GetMsrs(msr_list));
  for (const kvm_msr_entry& msr : msrs) {
    v1::Msr* saved = state.add_msrs();
    saved->set_index(msr.index);
    saved->set_value(msr.data);
  }
  EMBER_ASSIGN_OR_RETURN(kvm_lapic_state lapic, vcpu.GetLapic());
  state.set_lapic(Bytes(lapic));
  EMBER_ASSIGN_OR_RETURN(kvm_mp_state mp_state, vcpu.GetMpState());
  state.set_mp_state(Bytes(mp_state));
  EMBER_ASSIGN_OR_RETURN(kvm_vcpu_events events, vcpu.GetVcpuEvents());
  state.set_vcpu_events(Bytes(events));
  EMBER_ASSIGN_OR_RETURN(kvm_debugregs debugregs, vcpu.GetDebugRegs());
  state.set_debugregs(Bytes(debugregs));
  state.set_cpuid(std::string(reinterpret_cast<const char*>(cpuid.data()),  // raw KVM structs
                              cpuid.size() * sizeof(kvm_cpuid_entry2)));
  return state;
}

absl::Status RestoreVcpuState(const kvm::Vcpu& vcpu, const v1::VcpuState& state) {
  if (state.cpuid().size() % sizeof(kvm_cpuid_entry2) != 0 || state.cpuid().empty()) {
    return absl::InvalidArgumentError("saved CPUID table has a bad size");
  }
  std::vector<kvm_cpuid_entry2> cpuid(state.cpuid().size() / sizeof(kvm_cpuid_entry2));
  std::memcpy(cpuid.data(), state.cpuid().data(), state.cpuid().size());
  EMBER_RETURN_IF_ERROR(vcpu.SetCpuid(cpuid));

  EMBER_ASSIGN_OR_RETURN(kvm_sregs sregs, FromBytes<kvm_sregs>(state.sregs(), "sregs"));
  EMBER_RETURN_IF_ERROR(vcpu.SetSregs(sregs));
  EMBER_ASSIGN_OR_RETURN(kvm_regs regs, FromBytes<kvm_regs>(state.regs(), "regs"));
  EMBER_RETURN_IF_ERROR(vcpu.SetRegs(regs));
  if (!state.xsave().empty()) {
    EMBER_RETURN_IF_ERROR(vcpu.SetXsave(std::span(
        reinterpret_cast<const std::uint8_t*>(state.xsave().data()), state.xsave().size())));
    EMBER_ASSIGN_OR_RETURN(kvm_xcrs xcrs, FromBytes<kvm_xcrs>(state.xcrs(), "xcrs"));
    EMBER_RETURN_IF_ERROR(vcpu.SetXcrs(xcrs));
  } else {
    EMBER_ASSIGN_OR_RETURN(kvm_fpu fpu, FromBytes<kvm_fpu>(state.fpu(), "fpu"));
    EMBER_RETURN_IF_ERROR(vcpu.SetFpu(fpu));
  }
  EMBER_ASSIGN_OR_RETURN(kvm_lapic_state lapic, FromBytes<kvm_lapic_state>(state.lapic(), "lapic"));
  EMBER_RETURN_IF_ERROR(vcpu.SetLapic(lapic));
  std::vector<kvm_msr_entry> msrs;
  for (const v1::Msr& msr : state.msrs()) msrs.push_back({msr.index(), 0, msr.value()});
  EMBER_RETURN_IF_ERROR(vcpu.SetMsrs(msrs));
  EMBER_ASSIGN_OR_RETURN(kvm_mp_state mp_state,
                         FromBytes<kvm_mp_state>(state.mp_state(), "mp_state"));
  EMBER_RETURN_IF_ERROR(vcpu.SetMpState(mp_state));
  EMBER_ASSIGN_OR_RETURN(kvm_vcpu_events events,
                         FromBytes<kvm_vcpu_events>(state.vcpu_events(), "vcpu_events"));
  EMBER_RETURN_IF_ERROR(vcpu.SetVcpuEvents(events));
  EMBER_ASSIGN_OR_RETURN(kvm_debugregs debugregs,
                         FromBytes<kvm_debugregs>(state.debugregs(), "debugregs"));
  return vcpu.SetDebugRegs(debugregs);
}

absl::StatusOr<v1::VmState> SaveVmState(const kvm::Vm& vm) {
  v1::VmState state;
  EMBER_ASSIGN_OR_RETURN(kvm_irqchip master, vm.GetIrqchip(KVM_IRQCHIP_PIC_MASTER));
  state.set_pic_master(Bytes(master));
  EMBER_ASSIGN_OR_RETURN(kvm_irqchip slave, vm.GetIrqchip(KVM_IRQCHIP_PIC_SLAVE));
  state.set_pic_slave(Bytes(slave));
  EMBER_ASSIGN_OR_RETURN(kvm_irqchip ioapic, vm.GetIrqchip(KVM_IRQCHIP_IOAPIC));
  state.set_ioapic(Bytes(ioapic));
  EMBER_ASSIGN_OR_RETURN(kvm_pit_state2 pit, vm.GetPit());
  state.set_pit(Bytes(pit));
  EMBER_ASSIGN_OR_RETURN(kvm_clock_data clock, vm.GetClock());
  state.set_clock(Bytes(clock));
  return state;
}

absl::Status RestoreVmState(const kvm::Vm& vm, const v1::VmState& state) {
  struct Chip {
    const std::string* bytes;
    std::uint32_t id;
    const char* name;
  };
  for (const Chip& chip : {Chip{&state.pic_master(), KVM_IRQCHIP_PIC_MASTER, "pic_master"},
                           Chip{&state.pic_slave(), KVM_IRQCHIP_PIC_SLAVE, "pic_slave"},
                           Chip{&state.ioapic(), KVM_IRQCHIP_IOAPIC, "ioapic"}}) {
    EMBER_ASSIGN_OR_RETURN(kvm_irqchip irqchip, FromBytes<kvm_irqchip>(*chip.bytes, chip.name));
    // The blob says which chip it sets: one saved as another would set that one twice.
    if (irqchip.chip_id != chip.id) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "saved %s is irqchip %d, not %d", chip.name, irqchip.chip_id, chip.id));
    }
    EMBER_RETURN_IF_ERROR(vm.SetIrqchip(irqchip));
  }
  EMBER_ASSIGN_OR_RETURN(kvm_pit_state2 pit, FromBytes<kvm_pit_state2>(state.pit(), "pit"));
  EMBER_RETURN_IF_ERROR(vm.SetPit(pit));
  EMBER_ASSIGN_OR_RETURN(kvm_clock_data clock, FromBytes<kvm_clock_data>(state.clock(), "clock"));
  return vm.SetClock(clock);
}

std::vector<std::uint32_t> RequiredCpuFeatures(std::span<const kvm_cpuid_entry2> cpuid) {
  std::vector<std::uint32_t> words(5, 0);
  if (const auto* leaf1 = FindLeaf(cpuid, 1, 0)) {
    words[0] = leaf1->ecx & ~kEcxHypervisor;  // synthesised by the VMM
    words[1] = leaf1->edx & ~kEdxHtt;         // likewise, from the vCPU count
  }
  if (const auto* leaf7 = FindLeaf(cpuid, 7, 0)) {
    words[2] = leaf7->ebx;
    words[3] = leaf7->ecx;
    words[4] = leaf7->edx;
  }
  return words;
}

absl::Status CheckCpuFeatures(std::span<const std::uint32_t> required,
                              std::span<const kvm_cpuid_entry2> supported) {
  std::vector<std::uint32_t> have = RequiredCpuFeatures(supported);
  // Every snapshot lists each word, zero or not; a shorter list would require nothing.
  if (required.size() != have.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the snapshot lists %d required CPU feature words; a snapshot lists %d",
        required.size(), have.size()));
  }
  static constexpr const char* kNames[] = {"leaf 1 ECX", "leaf 1 EDX", "leaf 7 EBX",
                                           "leaf 7 ECX", "leaf 7 EDX"};
  std::string missing;
  for (std::size_t i = 0; i < required.size(); ++i) {
    std::uint32_t lacking = required[i] & ~have[i];
    if (lacking != 0) missing += absl::StrFormat(" %s bits 0x%08x;", kNames[i], lacking);
  }
  if (!missing.empty()) {
    return absl::InvalidArgumentError("the snapshot uses CPU features this host lacks:" +
                                      missing);
  }
  return absl::OkStatus();
}

}  // namespace ember::vmm
