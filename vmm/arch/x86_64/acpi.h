#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/base/guest_memory.h"

// The ACPI tables through which a guest kernel finds its CPUs and the IOAPIC when it was
// built without MP-table support (Debian's cloud kernel has CONFIG_X86_MPPARSE off):
// RSDP -> XSDT -> {FADT -> DSDT, MADT}, as Firecracker ships them. The platform is
// described as hardware-reduced ACPI (ACPI 6.5, section 4.1), so there is no PM timer,
// SCI or FACS to emulate. Linux looks for the RSDP in the first KiB of the EBDA and then
// in 0xE0000-0xFFFFF on 16-byte boundaries (drivers/acpi/acpica/tbxfroot.c), so the RSDP
// goes at 0xE0000 and the other tables follow it below 1 MiB.
namespace ember::arch {

constexpr std::uint64_t kRsdpAddr = 0xe0000;
// Linux scans for the RSDP up to here; every table must end below it, too, since the
// range is the BIOS area of a PC and never guest RAM to Linux.
constexpr std::uint64_t kAcpiAreaEnd = 0x100000;

// The tables for `vcpu_count` vCPUs (APIC ids 0..vcpu_count-1, the IOAPIC taking id
// vcpu_count as in the MP table) as the guest will see them at guest-physical
// `base_addr`: the RSDP first, then XSDT, FADT, DSDT and MADT, each 16-byte aligned.
// Fails when vcpu_count is outside 1..kMaxMpVcpus or base_addr is not 16-byte aligned
// below 4 GiB. Pure, so tests check the bytes.
[[nodiscard]] absl::StatusOr<std::vector<std::uint8_t>> BuildAcpiTables(std::uint64_t base_addr,
                                                                        std::uint32_t vcpu_count);

// Builds the tables and writes them at kRsdpAddr in `memory` (borrowed). Fails when
// vcpu_count is out of range or guest memory does not cover [kRsdpAddr, end of tables).
// Called once by the VM builder, after guest memory exists and before any vCPU runs.
[[nodiscard]] absl::Status WriteAcpiTables(const base::GuestMemory& memory,
                                           std::uint32_t vcpu_count);

}  // namespace ember::arch
