#pragma once

#include <cstdint>
#include <vector>

#include "vmm/base/guest_memory.h"

// Where the VMM puts things in guest-physical memory on x86_64. The low addresses follow
// the Linux boot protocol's expectations and Firecracker's choices, so a kernel that
// boots under Firecracker finds the same layout here.
namespace ember::arch {

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;
constexpr std::uint64_t kGiB = 1024 * kMiB;

constexpr std::uint64_t kGdtAddr = 0x500;
constexpr std::uint64_t kZeroPageAddr = 0x7000;
// Initial stack; the kernel switches to its own before using much of it.
constexpr std::uint64_t kBootStackPointer = 0x8ff0;
// Identity page tables: PML4, one PDPT and four page directories of 2 MiB pages that map
// the whole low 4 GiB (RAM below the gap and the MMIO gap itself).
constexpr std::uint64_t kPml4Addr = 0x9000;
constexpr std::uint64_t kPdptAddr = 0xa000;
constexpr std::uint64_t kPdAddr = 0xb000;
constexpr std::uint64_t kIdentityMappedGiB = 4;
constexpr std::uint64_t kCmdlineAddr = 0x20000;
// Linux's COMMAND_LINE_SIZE on x86, including the terminating NUL.
constexpr std::uint64_t kCmdlineMaxSize = 2048;
// The MP table lives in the last KiB of base memory, where Linux scans for it.
constexpr std::uint64_t kEbdaStart = 0x9fc00;
// Kernels load at or above 1 MiB; everything below belongs to the boot structures.
constexpr std::uint64_t kHimemStart = 0x100000;

// The PC legacy devices on the I/O ports, at their PC ports and ISA IRQs: COM1's 8250
// UART and the i8042 keyboard controller (data port 0x60, command/status port 0x64).
constexpr std::uint16_t kCom1Port = 0x3f8;
constexpr std::uint16_t kCom1Size = 8;
constexpr std::uint8_t kCom1Irq = 4;
constexpr std::uint16_t kI8042Port = 0x60;
constexpr std::uint16_t kI8042Size = 5;
constexpr std::uint8_t kI8042Irq = 1;

// The 32-bit MMIO gap: the last 768 MiB below 4 GiB hold no RAM. Devices live at its start;
// the IOAPIC and LAPIC at its top.
constexpr std::uint64_t kMmioGapStart = 4 * kGiB - 768 * kMiB;  // 0xd000_0000
constexpr std::uint64_t kMmioGapEnd = 4 * kGiB;
// Firecracker's boot-timer address: the guest writes kBootTimerMagic here when it is up.
constexpr std::uint64_t kBootTimerAddr = kMmioGapStart;
constexpr std::uint64_t kBootTimerSize = 0x1000;
// virtio-mmio devices follow, one 4 KiB window each.
constexpr std::uint64_t kVirtioMmioBase = kMmioGapStart + 0x1000;
constexpr std::uint64_t kVirtioMmioWindow = 0x1000;
// KVM's TSS (3 pages) and EPT identity-map page, parked just below the IOAPIC.
constexpr std::uint64_t kIdentityMapAddr = 0xfeffc000;
constexpr std::uint64_t kTssAddr = 0xfeffd000;

// Guest RAM ranges for `mem_bytes` of memory: below the MMIO gap, and above 4 GiB for the
// remainder. `mem_bytes` must be a multiple of the page size.
[[nodiscard]] std::vector<base::GuestMemory::Range> GuestRamRanges(std::uint64_t mem_bytes);

}  // namespace ember::arch
