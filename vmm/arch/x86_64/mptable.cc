#include "vmm/arch/x86_64/mptable.h"

#include <cstddef>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/arch/x86_64/table_bytes.h"
#include "vmm/base/status.h"

namespace ember::arch {
namespace {

// The structures below are the MP spec 1.4's (chapter 4), byte for byte; packed so the
// compiler cannot pad them, and their sizes checked against the spec.
struct [[gnu::packed]] MpFloatingPointer {
  char signature[4];          // "_MP_"
  std::uint32_t config_addr;  // physical address of the configuration table
  std::uint8_t length;        // in 16-byte units: 1
  std::uint8_t spec_rev;      // 4 for spec 1.4
  std::uint8_t checksum;      // all 16 bytes sum to 0
  std::uint8_t features[5];   // features[0] == 0: a configuration table is present
};
static_assert(sizeof(MpFloatingPointer) == 16);

struct [[gnu::packed]] MpConfigHeader {
  char signature[4];          // "PCMP"
  std::uint16_t base_length;  // header plus base entries, in bytes
  std::uint8_t spec_rev;
  std::uint8_t checksum;  // header and base entries sum to 0
  char oem_id[8];
  char product_id[12];
  std::uint32_t oem_table_addr;
  std::uint16_t oem_table_size;
  std::uint16_t entry_count;
  std::uint32_t lapic_addr;
  std::uint16_t extended_length;
  std::uint8_t extended_checksum;
  std::uint8_t reserved;
};
static_assert(sizeof(MpConfigHeader) == 44);
static_assert(offsetof(MpConfigHeader, lapic_addr) == 36);

struct [[gnu::packed]] MpProcessor {
  std::uint8_t type;
  std::uint8_t apic_id;
  std::uint8_t apic_version;
  std::uint8_t flags;
  std::uint32_t signature;  // CPUID.1:EAX stepping/model/family
  std::uint32_t features;   // CPUID.1:EDX
  std::uint32_t reserved[2];
};
static_assert(sizeof(MpProcessor) == 20);

struct [[gnu::packed]] MpBus {
  std::uint8_t type;
  std::uint8_t bus_id;
  char bus_type[6];
};
static_assert(sizeof(MpBus) == 8);

struct [[gnu::packed]] MpIoapic {
  std::uint8_t type;
  std::uint8_t apic_id;
  std::uint8_t version;
  std::uint8_t flags;
  std::uint32_t addr;
};
static_assert(sizeof(MpIoapic) == 8);

// I/O and local interrupt assignment entries share one layout.
struct [[gnu::packed]] MpInterrupt {
  std::uint8_t type;
  std::uint8_t interrupt_type;
  std::uint16_t flags;  // polarity and trigger; 0 = as the source bus defines (ISA: edge, high)
  std::uint8_t source_bus;
  std::uint8_t source_irq;
  std::uint8_t dest_apic_id;
  std::uint8_t dest_pin;  // IOAPIC pin or LINTn
};
static_assert(sizeof(MpInterrupt) == 8);

enum EntryType : std::uint8_t {
  kProcessor = 0,
  kBus = 1,
  kIoapic = 2,
  kIoInterrupt = 3,
  kLocalInterrupt = 4,
};
enum InterruptType : std::uint8_t { kInt = 0, kNmi = 1, kExtInt = 3 };

constexpr std::uint8_t kSpecRev = 4;
constexpr std::uint8_t kCpuEnabled = 1;
constexpr std::uint8_t kCpuBsp = 2;
constexpr std::uint8_t kIoapicUsable = 1;
// The versions KVM's in-kernel LAPIC and IOAPIC report in their version registers.
constexpr std::uint8_t kLapicVersion = 0x14;
constexpr std::uint8_t kIoapicVersion = 0x11;
// Family 6, as every vCPU KVM offers on Intel; Linux only prints these two fields.
constexpr std::uint32_t kCpuSignature = 0x600;
constexpr std::uint32_t kCpuFeatureFpu = 1u << 0;
constexpr std::uint32_t kCpuFeatureApic = 1u << 9;
constexpr std::uint8_t kIsaBusId = 0;
constexpr std::uint8_t kAllLapics = 0xff;
// The PIT's ISA IRQ 0 is wired to IOAPIC pin 2, and IRQ 2 (the PIC cascade) to nothing,
// exactly as KVM's default GSI routing does it.
constexpr std::uint8_t kTimerIrq = 0;
constexpr std::uint8_t kTimerPin = 2;
constexpr std::uint8_t kCascadeIrq = 2;
constexpr std::uint64_t kBaseMemoryEnd = 0xa0000;

// ISA IRQs 0..23 except the cascade: 23 I/O interrupt entries.
constexpr std::uint32_t kIoInterruptEntries = kIoapicPins - 1;
constexpr std::uint32_t kLocalInterruptEntries = 2;

MpInterrupt IoInterrupt(std::uint8_t isa_irq, std::uint8_t ioapic_id) {
  MpInterrupt e{};
  e.type = kIoInterrupt;
  e.interrupt_type = kInt;
  e.source_bus = kIsaBusId;
  e.source_irq = isa_irq;
  e.dest_apic_id = ioapic_id;
  e.dest_pin = isa_irq == kTimerIrq ? kTimerPin : isa_irq;
  return e;
}

MpInterrupt LocalInterrupt(InterruptType type, std::uint8_t lint) {
  MpInterrupt e{};
  e.type = kLocalInterrupt;
  e.interrupt_type = type;
  e.source_bus = kIsaBusId;
  e.dest_apic_id = kAllLapics;
  e.dest_pin = lint;
  return e;
}

}  // namespace

std::uint64_t MpTableSize(std::uint32_t vcpu_count) {
  return sizeof(MpFloatingPointer) + sizeof(MpConfigHeader) +
         std::uint64_t{vcpu_count} * sizeof(MpProcessor) + sizeof(MpBus) + sizeof(MpIoapic) +
         (kIoInterruptEntries + kLocalInterruptEntries) * sizeof(MpInterrupt);
}

absl::StatusOr<std::vector<std::uint8_t>> BuildMpTable(std::uint64_t base_addr,
                                                       std::uint32_t vcpu_count) {
  if (vcpu_count < 1 || vcpu_count > kMaxMpVcpus) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MP table: ", vcpu_count, " vCPUs requested; supported are 1 to ", kMaxMpVcpus));
  }
  if (base_addr % 16 != 0 || base_addr + MpTableSize(vcpu_count) > 4 * kGiB) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MP table: base address 0x", absl::Hex(base_addr), " is not 16-byte aligned below 4 GiB"));
  }
  // APIC ids 0..vcpu_count-1 belong to the vCPUs; the IOAPIC takes the next one.
  const auto ioapic_id = static_cast<std::uint8_t>(vcpu_count);

  std::vector<std::uint8_t> table;
  table.reserve(MpTableSize(vcpu_count));

  MpFloatingPointer pointer{};
  std::memcpy(pointer.signature, "_MP_", 4);
  pointer.config_addr = static_cast<std::uint32_t>(base_addr + sizeof(MpFloatingPointer));
  pointer.length = 1;
  pointer.spec_rev = kSpecRev;
  pointer.checksum = Checksum(BytesOf(pointer));
  Append(table, pointer);

  // The header's length, count and checksum depend on the entries: reserve its place now.
  const std::size_t header_offset = table.size();
  table.resize(table.size() + sizeof(MpConfigHeader));
  std::uint16_t entry_count = 0;

  for (std::uint32_t id = 0; id < vcpu_count; ++id) {
    MpProcessor cpu{};
    cpu.type = kProcessor;
    cpu.apic_id = static_cast<std::uint8_t>(id);
    cpu.apic_version = kLapicVersion;
    cpu.flags = static_cast<std::uint8_t>(kCpuEnabled | (id == 0 ? kCpuBsp : 0));
    cpu.signature = kCpuSignature;
    cpu.features = kCpuFeatureFpu | kCpuFeatureApic;
    Append(table, cpu);
    ++entry_count;
  }

  MpBus isa{};
  isa.type = kBus;
  isa.bus_id = kIsaBusId;
  std::memcpy(isa.bus_type, "ISA   ", 6);
  Append(table, isa);
  ++entry_count;

  MpIoapic ioapic{};
  ioapic.type = kIoapic;
  ioapic.apic_id = ioapic_id;
  ioapic.version = kIoapicVersion;
  ioapic.flags = kIoapicUsable;
  ioapic.addr = kIoapicAddr;
  Append(table, ioapic);
  ++entry_count;

  // Linux takes ISA IRQ n (n >= 16 included) as its IRQ number n on the pin named here, so
  // every GSI a device may use needs an entry.
  for (std::uint32_t irq = 0; irq < kIoapicPins; ++irq) {
    if (irq == kCascadeIrq) continue;
    Append(table, IoInterrupt(static_cast<std::uint8_t>(irq), ioapic_id));
    ++entry_count;
  }

  // The PIC reaches the LAPICs as ExtINT on LINT0 (virtual-wire mode), NMIs on LINT1.
  Append(table, LocalInterrupt(kExtInt, 0));
  Append(table, LocalInterrupt(kNmi, 1));
  entry_count += 2;

  MpConfigHeader header{};
  std::memcpy(header.signature, "PCMP", 4);
  header.base_length = static_cast<std::uint16_t>(table.size() - header_offset);
  header.spec_rev = kSpecRev;
  std::memcpy(header.oem_id, "EMBER   ", 8);
  std::memcpy(header.product_id, "MICROVM     ", 12);
  header.entry_count = entry_count;
  header.lapic_addr = kLapicAddr;
  std::memcpy(table.data() + header_offset, &header, sizeof(header));
  table[header_offset + offsetof(MpConfigHeader, checksum)] =
      Checksum(std::span(table).subspan(header_offset, header.base_length));
  return table;
}

absl::Status WriteMpTable(const base::GuestMemory& memory, std::uint32_t vcpu_count) {
  EMBER_ASSIGN_OR_RETURN(std::vector<std::uint8_t> table, BuildMpTable(kEbdaStart, vcpu_count));
  if (kEbdaStart + table.size() > kBaseMemoryEnd) {
    return absl::InvalidArgumentError(absl::StrCat("MP table for ", vcpu_count, " vCPUs (",
                                                   table.size(),
                                                   " bytes) does not fit below 0xa0000"));
  }
  absl::Status status = memory.Write(kEbdaStart, table);
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat("writing the MP table: ", status.message()));
  }
  return absl::OkStatus();
}

}  // namespace ember::arch
