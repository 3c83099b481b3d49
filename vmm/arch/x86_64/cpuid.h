#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

namespace ember::arch {

// Turns KVM's supported CPUID table into the one vCPU `vcpu_id` of `vcpu_count` sees:
// its APIC id, a topology of `vcpu_count` single-thread cores in one package, the
// hypervisor-present bit, and no performance-monitoring leaf (the VMM does not manage a
// virtual PMU). Pure function of its inputs, so it is unit-tested without KVM.
[[nodiscard]] std::vector<kvm_cpuid_entry2> NormalizeCpuid(std::vector<kvm_cpuid_entry2> entries,
                                                           std::uint32_t vcpu_id,
                                                           std::uint32_t vcpu_count);

}  // namespace ember::arch
