#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "vmm/base/guest_memory.h"
#include "vmm/kvm/vcpu.h"

namespace ember::arch {

// Writes the GDT and the identity page tables (low 4 GiB, 2 MiB pages) that the 64-bit boot
// protocol requires into guest memory. Once per VM, before any vCPU runs.
[[nodiscard]] absl::Status WriteBootTables(const base::GuestMemory& memory);

// Puts the boot vCPU in the state the Linux 64-bit boot protocol specifies: long mode, flat
// segments from our GDT, paging on our identity map, interrupts off, RIP = `entry`,
// RSI = the zero page. Also sets the boot MSRs and the LAPIC's LINT0/LINT1 wiring.
[[nodiscard]] absl::Status ConfigureBootVcpu(const kvm::Vcpu& vcpu, std::uint64_t entry);

// Application processors wait for Linux to start them with INIT/SIPI; they only need the
// MSRs and LAPIC wiring.
[[nodiscard]] absl::Status ConfigureApplicationVcpu(const kvm::Vcpu& vcpu);

}  // namespace ember::arch
