#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/base/guest_memory.h"

// The ACPI tables through which a guest kernel finds its CPUs and the IOAPIC when it was
// built without MP-table support (Debian's cloud kernel has CONFIG_X86_MPPARSE off):
// RSDP -> XSDT -> {FADT -> DSDT, MADT}, as Firecracker ships them. The DSDT declares the
// platform's devices, so that the guest's ACPI bus enumerates them and loads their drivers
// by modalias: a kernel whose virtio_mmio is a module (Debian's) never acts on the
// `virtio_mmio.device=` command-line tokens otherwise. The platform is
// described as hardware-reduced ACPI (ACPI 6.5, section 4.1), so there is no PM timer,
// SCI or FACS to emulate. Linux looks for the RSDP in the first KiB of the EBDA and then
// in 0xE0000-0xFFFFF on 16-byte boundaries (drivers/acpi/acpica/tbxfroot.c), so the RSDP
// goes at 0xE0000 and the other tables follow it below 1 MiB.
namespace ember::arch {

constexpr std::uint64_t kRsdpAddr = 0xe0000;
// Linux scans for the RSDP up to here; every table must end below it, too, since the
// range is the BIOS area of a PC and never guest RAM to Linux.
constexpr std::uint64_t kAcpiAreaEnd = 0x100000;

// A legacy device on the I/O ports, with its ISA IRQ (0-15).
struct IsaDevice {
  std::uint16_t port;
  std::uint16_t size;
  std::uint8_t irq;
};

// A virtio-mmio device where the VMM placed it: its register window (below 4 GiB) and the
// GSI its interrupt arrives on (an IOAPIC pin, edge-triggered through an irqfd).
struct MmioDevice {
  std::uint64_t base;
  std::uint64_t size;
  std::uint32_t gsi;
};

// The devices the DSDT declares under \_SB_. Each is optional so that tests (and a
// platform without them) can leave it out.
struct AcpiDevices {
  // The 8250 UART at COM1, as PNP0501.
  std::optional<IsaDevice> com1;
  // The i8042 keyboard controller, as PNP0303: data port at `port`, command/status port
  // at `port + 4`, so `size` is at least 5.
  std::optional<IsaDevice> i8042;
  // In placement order; device i is named V<i, 3 decimal digits> with _UID i.
  std::vector<MmioDevice> virtio_mmio;
};

// The tables for `vcpu_count` vCPUs (APIC ids 0..vcpu_count-1, the IOAPIC taking id
// vcpu_count as in the MP table) and `devices` as the guest will see them at
// guest-physical `base_addr`: the RSDP first, then XSDT, FADT, DSDT and MADT, each 16-byte
// aligned. Fails when vcpu_count is outside 1..kMaxMpVcpus, base_addr is not 16-byte
// aligned or the tables would not end below 4 GiB, or a device cannot be described (an
// IRQ above 15, a window reaching past 4 GiB, a GSI beyond the IOAPIC's pins, more than
// 1000 virtio devices). Pure, so tests check the bytes.
[[nodiscard]] absl::StatusOr<std::vector<std::uint8_t>> BuildAcpiTables(std::uint64_t base_addr,
                                                                        std::uint32_t vcpu_count,
                                                                        const AcpiDevices& devices);

// Builds the tables and writes them at kRsdpAddr in `memory` (borrowed). Fails as
// BuildAcpiTables does, when the tables would reach kAcpiAreaEnd, or when guest memory
// does not cover [kRsdpAddr, end of tables). Called once by the VM builder, after guest
// memory exists and the devices are placed, before any vCPU runs.
[[nodiscard]] absl::Status WriteAcpiTables(const base::GuestMemory& memory,
                                           std::uint32_t vcpu_count, const AcpiDevices& devices);

}  // namespace ember::arch
