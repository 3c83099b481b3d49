#include "vmm/arch/x86_64/boot_cpu.h"

#include <array>
#include <cstring>

#include "vmm/arch/x86_64/layout.h"
#include "vmm/base/status.h"

namespace ember::arch {
namespace {

// Flat GDT: null, 64-bit code, data, TSS (KVM wants a valid TR even though nothing uses it).
constexpr std::array<std::uint64_t, 4> kGdt = {
    0x0000000000000000,  // null
    0x00af9b000000ffff,  // 0x08: code, present, DPL 0, long mode, 4 KiB granularity
    0x00cf93000000ffff,  // 0x10: data, present, writable, 4 KiB granularity
    0x008f8b000000ffff,  // 0x18: 64-bit TSS, busy
};
constexpr std::uint16_t kCodeSelector = 0x08;
constexpr std::uint16_t kDataSelector = 0x10;
constexpr std::uint16_t kTssSelector = 0x18;

constexpr std::uint64_t kPagePresentWritable = 0x3;
constexpr std::uint64_t kPageSize2M = 0x80;

constexpr std::uint64_t kCr0Pe = 1ULL << 0;
constexpr std::uint64_t kCr0Mp = 1ULL << 1;
constexpr std::uint64_t kCr0Et = 1ULL << 4;
constexpr std::uint64_t kCr0Ne = 1ULL << 5;
constexpr std::uint64_t kCr0Wp = 1ULL << 16;
constexpr std::uint64_t kCr0Pg = 1ULL << 31;
constexpr std::uint64_t kCr4Pae = 1ULL << 5;
constexpr std::uint64_t kEferLme = 1ULL << 8;
constexpr std::uint64_t kEferLma = 1ULL << 10;

// MSRs the boot protocol expects cleared, and fast strings on (Linux assumes it).
constexpr std::uint32_t kMsrSysenterCs = 0x174;
constexpr std::uint32_t kMsrSysenterEsp = 0x175;
constexpr std::uint32_t kMsrSysenterEip = 0x176;
constexpr std::uint32_t kMsrStar = 0xc0000081;
constexpr std::uint32_t kMsrLstar = 0xc0000082;
constexpr std::uint32_t kMsrCstar = 0xc0000083;
constexpr std::uint32_t kMsrSyscallMask = 0xc0000084;
constexpr std::uint32_t kMsrKernelGsBase = 0xc0000102;
constexpr std::uint32_t kMsrTsc = 0x10;
constexpr std::uint32_t kMsrMiscEnable = 0x1a0;
constexpr std::uint64_t kMiscEnableFastString = 1;

// LAPIC local vector table registers and delivery modes (Intel SDM vol. 3, 10.5.1).
constexpr std::size_t kApicLvtLint0 = 0x350;
constexpr std::size_t kApicLvtLint1 = 0x360;
constexpr std::uint32_t kDeliveryModeExtInt = 7;
constexpr std::uint32_t kDeliveryModeNmi = 4;

kvm_segment SegmentFromGdt(std::uint16_t selector) {
  std::uint64_t entry = kGdt[selector / 8];
  kvm_segment seg{};
  seg.base = 0;
  seg.limit = 0xffffffff;  // flat: 4 KiB granularity over the whole 20-bit limit
  seg.selector = selector;
  seg.type = static_cast<std::uint8_t>((entry >> 40) & 0xf);
  seg.s = static_cast<std::uint8_t>((entry >> 44) & 1);
  seg.dpl = static_cast<std::uint8_t>((entry >> 45) & 3);
  seg.present = static_cast<std::uint8_t>((entry >> 47) & 1);
  seg.avl = static_cast<std::uint8_t>((entry >> 52) & 1);
  seg.l = static_cast<std::uint8_t>((entry >> 53) & 1);
  seg.db = static_cast<std::uint8_t>((entry >> 54) & 1);
  seg.g = static_cast<std::uint8_t>((entry >> 55) & 1);
  return seg;
}

absl::Status ConfigureBootMsrs(const kvm::Vcpu& vcpu) {
  const kvm_msr_entry entries[] = {
      {kMsrSysenterCs, 0, 0},  {kMsrSysenterEsp, 0, 0},  {kMsrSysenterEip, 0, 0},
      {kMsrStar, 0, 0},        {kMsrCstar, 0, 0},        {kMsrKernelGsBase, 0, 0},
      {kMsrSyscallMask, 0, 0}, {kMsrLstar, 0, 0},        {kMsrTsc, 0, 0},
      {kMsrMiscEnable, 0, kMiscEnableFastString},
  };
  return vcpu.SetMsrs(entries);
}

void SetLvtDeliveryMode(kvm_lapic_state& lapic, std::size_t reg, std::uint32_t mode) {
  std::uint32_t value;
  std::memcpy(&value, lapic.regs + reg, sizeof(value));
  value = (value & ~0x700u) | (mode << 8);
  std::memcpy(lapic.regs + reg, &value, sizeof(value));
}

// LINT0 carries the PIC's interrupts (ExtINT) and LINT1 NMIs, as on a PC; Linux relies on
// this "virtual wire" mode before it switches to the IOAPIC.
absl::Status ConfigureLapicWiring(const kvm::Vcpu& vcpu) {
  EMBER_ASSIGN_OR_RETURN(kvm_lapic_state lapic, vcpu.GetLapic());
  SetLvtDeliveryMode(lapic, kApicLvtLint0, kDeliveryModeExtInt);
  SetLvtDeliveryMode(lapic, kApicLvtLint1, kDeliveryModeNmi);
  return vcpu.SetLapic(lapic);
}

}  // namespace

absl::Status WriteBootTables(const base::GuestMemory& memory) {
  EMBER_RETURN_IF_ERROR(memory.WriteObj(kGdtAddr, kGdt));
  EMBER_RETURN_IF_ERROR(memory.WriteObj<std::uint64_t>(kPml4Addr, kPdptAddr | kPagePresentWritable));
  for (std::uint64_t gib = 0; gib < kIdentityMappedGiB; ++gib) {
    std::uint64_t pd = kPdAddr + gib * 0x1000;
    EMBER_RETURN_IF_ERROR(
        memory.WriteObj<std::uint64_t>(kPdptAddr + gib * 8, pd | kPagePresentWritable));
    std::array<std::uint64_t, 512> entries;
    for (std::uint64_t i = 0; i < entries.size(); ++i) {
      entries[i] = (gib * kGiB + i * 2 * kMiB) | kPagePresentWritable | kPageSize2M;
    }
    EMBER_RETURN_IF_ERROR(memory.WriteObj(pd, entries));
  }
  return absl::OkStatus();
}

absl::Status ConfigureBootVcpu(const kvm::Vcpu& vcpu, std::uint64_t entry) {
  EMBER_ASSIGN_OR_RETURN(kvm_sregs sregs, vcpu.GetSregs());
  sregs.gdt.base = kGdtAddr;
  sregs.gdt.limit = sizeof(kGdt) - 1;
  sregs.idt.base = 0;
  sregs.idt.limit = 0;  // no IDT: the guest installs its own before enabling interrupts
  sregs.cs = SegmentFromGdt(kCodeSelector);
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = SegmentFromGdt(kDataSelector);
  sregs.tr = SegmentFromGdt(kTssSelector);
  sregs.cr0 = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Pg;
  sregs.cr3 = kPml4Addr;
  sregs.cr4 = kCr4Pae;
  sregs.efer = kEferLme | kEferLma;
  EMBER_RETURN_IF_ERROR(vcpu.SetSregs(sregs));

  kvm_regs regs{};
  regs.rflags = 0x2;  // bit 1 is reserved-as-one; IF clear
  regs.rip = entry;
  regs.rsp = kBootStackPointer;
  regs.rbp = kBootStackPointer;
  regs.rsi = kZeroPageAddr;
  EMBER_RETURN_IF_ERROR(vcpu.SetRegs(regs));

  kvm_fpu fpu{};
  fpu.fcw = 0x37f;     // x87 default control word
  fpu.mxcsr = 0x1f80;  // SSE default: all exceptions masked
  EMBER_RETURN_IF_ERROR(vcpu.SetFpu(fpu));
  return ConfigureApplicationVcpu(vcpu);
}

absl::Status ConfigureApplicationVcpu(const kvm::Vcpu& vcpu) {
  EMBER_RETURN_IF_ERROR(ConfigureBootMsrs(vcpu));
  return ConfigureLapicWiring(vcpu);
}

}  // namespace ember::arch
