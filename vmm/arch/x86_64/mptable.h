#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/base/guest_memory.h"

// The Intel MultiProcessor Specification 1.4 table through which a guest kernel without
// ACPI finds its CPUs, the IOAPIC and how ISA interrupts reach it. Linux scans the last
// KiB of base memory for it (arch/x86/kernel/mpparse.c), so it goes at kEbdaStart.
namespace ember::arch {

constexpr std::uint32_t kMaxMpVcpus = 32;
constexpr std::uint32_t kLapicAddr = 0xfee00000;
constexpr std::uint32_t kIoapicAddr = 0xfec00000;
// KVM's in-kernel IOAPIC has 24 pins; its default routing sends GSI n to pin n, except
// GSI 0 (the PIT), which goes to pin 2 as on real PCs.
constexpr std::uint32_t kIoapicPins = 24;
// Interrupt lines free for devices: 0-4 are taken by the PIT, keyboard, cascade and the
// COM ports in PC convention. Linux's IRQ number for line n is n, so a device on GSI n
// is announced as `virtio_mmio.device=4K@<addr>:n` and its irqfd registered on GSI n.
constexpr std::uint32_t kFirstDeviceGsi = 5;
constexpr std::uint32_t kLastDeviceGsi = kIoapicPins - 1;

// Bytes the table takes for `vcpu_count` vCPUs: floating pointer, header and entries.
[[nodiscard]] std::uint64_t MpTableSize(std::uint32_t vcpu_count);

// The table for `vcpu_count` vCPUs (APIC ids 0..vcpu_count-1, vCPU 0 the BSP) as the
// guest will see it at guest-physical `base_addr`: the floating pointer structure first,
// then the configuration table it points to. Fails when vcpu_count is outside
// 1..kMaxMpVcpus or base_addr is not 16-byte aligned below 4 GiB, as the spec requires.
// Pure, so tests check the bytes.
[[nodiscard]] absl::StatusOr<std::vector<std::uint8_t>> BuildMpTable(std::uint64_t base_addr,
                                                                     std::uint32_t vcpu_count);

// Builds the table and writes it at kEbdaStart in `memory` (borrowed). Fails when
// vcpu_count is out of range, the table would reach past the end of base memory
// (0xa0000), or guest memory does not cover it. Called once by the VM builder, after
// guest memory exists and before any vCPU runs.
[[nodiscard]] absl::Status WriteMpTable(const base::GuestMemory& memory, std::uint32_t vcpu_count);

}  // namespace ember::arch
