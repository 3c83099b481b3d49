#pragma once

#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "ember/v1/snapshot.pb.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/vcpu.h"
#include "vmm/kvm/vm.h"

// Moving KVM's view of a VM into snapshot messages and back. Only while every vCPU is
// paused (saving) or before any runs (restoring); called on the VMM thread.
namespace ember::vmm {

// `cpuid` is the table the VMM set on the vCPU: some KVMs (this workplace's among them)
// read back the host's own values instead, which a restore could not set again.
[[nodiscard]] absl::StatusOr<v1::VcpuState> SaveVcpuState(
    const kvm::Vcpu& vcpu, std::span<const std::uint32_t> msr_list, std::size_t xsave_size,
    std::span<const kvm_cpuid_entry2> cpuid);
// Restores in the order KVM needs: CPUID first (it shapes what the rest may hold), the LAPIC
// before MSRs that live in it (TSC deadline) and before pending events.
[[nodiscard]] absl::Status RestoreVcpuState(const kvm::Vcpu& vcpu, const v1::VcpuState& state);

[[nodiscard]] absl::StatusOr<v1::VmState> SaveVmState(const kvm::Vm& vm);
[[nodiscard]] absl::Status RestoreVmState(const kvm::Vm& vm, const v1::VmState& state);

// The CPU feature words a guest with this CPUID relies on (leaf 1 ECX/EDX, leaf 7.0
// EBX/ECX/EDX), minus the bits the VMM itself synthesises.
[[nodiscard]] std::vector<std::uint32_t> RequiredCpuFeatures(
    std::span<const kvm_cpuid_entry2> cpuid);
// Fails, listing what is missing, when `supported` lacks a bit of `required`, and when
// `required` is not one word for each RequiredCpuFeatures gives. InvalidArgument.
[[nodiscard]] absl::Status CheckCpuFeatures(std::span<const std::uint32_t> required,
                                            std::span<const kvm_cpuid_entry2> supported);

}  // namespace ember::vmm
