#include "vmm/arch/x86_64/acpi.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <span>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "vmm/arch/x86_64/aml.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/arch/x86_64/mptable.h"
#include "vmm/arch/x86_64/table_bytes.h"
#include "vmm/base/status.h"

namespace ember::arch {
namespace {

// The structures below are ACPI 6.5's (chapter 5.2), byte for byte; packed so the
// compiler cannot pad them, and their sizes checked against the spec.
struct [[gnu::packed]] Rsdp {
  char signature[8];      // "RSD PTR "
  std::uint8_t checksum;  // the first 20 bytes (the ACPI 1.0 part) sum to 0
  char oem_id[6];
  std::uint8_t revision;    // 2: ACPI 2.0 and later, with the XSDT
  std::uint32_t rsdt_addr;  // 0: there is no RSDT, only the XSDT
  std::uint32_t length;     // of this structure: 36
  std::uint64_t xsdt_addr;
  std::uint8_t extended_checksum;  // all 36 bytes sum to 0
  std::uint8_t reserved[3];
};
static_assert(sizeof(Rsdp) == 36);
static_assert(offsetof(Rsdp, length) == 20);

// The header every system description table starts with (5.2.6).
struct [[gnu::packed]] SdtHeader {
  char signature[4];
  std::uint32_t length;  // header and body
  std::uint8_t revision;
  std::uint8_t checksum;  // the whole table sums to 0
  char oem_id[6];
  char oem_table_id[8];
  std::uint32_t oem_revision;
  char creator_id[4];
  std::uint32_t creator_revision;
};
static_assert(sizeof(SdtHeader) == 36);
static_assert(offsetof(SdtHeader, checksum) == 9);

// Generic Address Structure (5.2.3.2); all-zero means "not present".
struct [[gnu::packed]] Gas {
  std::uint8_t space_id;
  std::uint8_t bit_width;
  std::uint8_t bit_offset;
  std::uint8_t access_size;
  std::uint64_t address;
};
static_assert(sizeof(Gas) == 12);

// Fixed ACPI Description Table, revision 6 (5.2.9). A hardware-reduced platform leaves
// every PM, GPE and SCI field zero.
struct [[gnu::packed]] Fadt {
  SdtHeader header;
  std::uint32_t firmware_ctrl;
  std::uint32_t dsdt;
  std::uint8_t reserved0;
  std::uint8_t preferred_pm_profile;
  std::uint16_t sci_int;
  std::uint32_t smi_cmd;
  std::uint8_t acpi_enable;
  std::uint8_t acpi_disable;
  std::uint8_t s4bios_req;
  std::uint8_t pstate_cnt;
  std::uint32_t pm1a_evt_blk;
  std::uint32_t pm1b_evt_blk;
  std::uint32_t pm1a_cnt_blk;
  std::uint32_t pm1b_cnt_blk;
  std::uint32_t pm2_cnt_blk;
  std::uint32_t pm_tmr_blk;
  std::uint32_t gpe0_blk;
  std::uint32_t gpe1_blk;
  std::uint8_t pm1_evt_len;
  std::uint8_t pm1_cnt_len;
  std::uint8_t pm2_cnt_len;
  std::uint8_t pm_tmr_len;
  std::uint8_t gpe0_blk_len;
  std::uint8_t gpe1_blk_len;
  std::uint8_t gpe1_base;
  std::uint8_t cst_cnt;
  std::uint16_t p_lvl2_lat;
  std::uint16_t p_lvl3_lat;
  std::uint16_t flush_size;
  std::uint16_t flush_stride;
  std::uint8_t duty_offset;
  std::uint8_t duty_width;
  std::uint8_t day_alrm;
  std::uint8_t mon_alrm;
  std::uint8_t century;
  std::uint16_t iapc_boot_arch;
  std::uint8_t reserved1;
  std::uint32_t flags;
  Gas reset_reg;
  std::uint8_t reset_value;
  std::uint16_t arm_boot_arch;
  std::uint8_t minor_version;
  std::uint64_t x_firmware_ctrl;
  std::uint64_t x_dsdt;
  Gas x_pm1a_evt_blk;
  Gas x_pm1b_evt_blk;
  Gas x_pm1a_cnt_blk;
  Gas x_pm1b_cnt_blk;
  Gas x_pm2_cnt_blk;
  Gas x_pm_tmr_blk;
  Gas x_gpe0_blk;
  Gas x_gpe1_blk;
  Gas sleep_control_reg;
  Gas sleep_status_reg;
  char hypervisor_vendor_id[8];
};
static_assert(sizeof(Fadt) == 276);
static_assert(offsetof(Fadt, iapc_boot_arch) == 109);
static_assert(offsetof(Fadt, flags) == 112);
static_assert(offsetof(Fadt, x_dsdt) == 140);

// Multiple APIC Description Table (5.2.12) and the interrupt controller structures used.
struct [[gnu::packed]] MadtHeader {
  SdtHeader header;
  std::uint32_t lapic_addr;
  std::uint32_t flags;
};
static_assert(sizeof(MadtHeader) == 44);

struct [[gnu::packed]] MadtLapic {
  std::uint8_t type;
  std::uint8_t length;
  std::uint8_t processor_uid;
  std::uint8_t apic_id;
  std::uint32_t flags;
};
static_assert(sizeof(MadtLapic) == 8);

struct [[gnu::packed]] MadtIoapic {
  std::uint8_t type;
  std::uint8_t length;
  std::uint8_t ioapic_id;
  std::uint8_t reserved;
  std::uint32_t address;
  std::uint32_t gsi_base;
};
static_assert(sizeof(MadtIoapic) == 12);

struct [[gnu::packed]] MadtInterruptOverride {
  std::uint8_t type;
  std::uint8_t length;
  std::uint8_t bus;     // 0: ISA
  std::uint8_t source;  // the ISA IRQ
  std::uint32_t gsi;
  std::uint16_t flags;  // MPS INTI flags: polarity in bits 0-1, trigger mode in bits 2-3
};
static_assert(sizeof(MadtInterruptOverride) == 10);

struct [[gnu::packed]] MadtLapicNmi {
  std::uint8_t type;
  std::uint8_t length;
  std::uint8_t processor_uid;  // 0xff: all processors
  std::uint16_t flags;
  std::uint8_t lint;
};
static_assert(sizeof(MadtLapicNmi) == 6);

enum MadtEntryType : std::uint8_t {
  kMadtLapic = 0,
  kMadtIoapic = 1,
  kMadtInterruptOverride = 2,
  kMadtLapicNmi = 4,
};

constexpr char kOemId[] = "EMBER ";
constexpr char kOemTableId[] = "EMBERVM ";
constexpr char kCreatorId[] = "EMBR";
constexpr std::uint32_t kOemRevision = 1;
constexpr std::uint32_t kCreatorRevision = 1;

constexpr std::uint8_t kRsdpRevision = 2;
constexpr std::uint8_t kXsdtRevision = 1;
// FADT 6.5. Linux treats MADT entries as "online capable" only from FADT 6.3 on; every
// LAPIC entry here is plainly Enabled, so that makes no difference.
constexpr std::uint8_t kFadtRevision = 6;
constexpr std::uint8_t kFadtMinorVersion = 5;
// 2 and up: AML integers are 64-bit.
constexpr std::uint8_t kDsdtRevision = 2;
constexpr std::uint8_t kMadtRevision = 5;

// FADT flags (5.2.9, table 5.10). The power and sleep buttons, if any, would be control
// method devices; hardware-reduced means no fixed hardware (PM timer, SCI, PM1 blocks)
// at all, which is what this VMM offers.
constexpr std::uint32_t kFadtPowerButton = 1u << 4;
constexpr std::uint32_t kFadtSleepButton = 1u << 5;
constexpr std::uint32_t kFadtHwReducedAcpi = 1u << 20;

// IA-PC boot architecture flags (5.2.9.3). The i8042 bit is set: Linux otherwise marks
// the controller as absent (arch/x86/kernel/acpi/boot.c, acpi_parse_fadt) and its i8042
// driver gives up before looking for the DSDT's PNP0303 device. reboot=k pokes port 0x64
// itself and works either way. LEGACY_DEVICES stays clear: the DSDT declares the ISA
// devices, nothing needs PnP BIOS enumeration.
constexpr std::uint16_t kBootArch8042 = 1u << 1;
constexpr std::uint16_t kBootArchNoVga = 1u << 2;
constexpr std::uint16_t kBootArchNoMsi = 1u << 3;
constexpr std::uint16_t kBootArchNoAspm = 1u << 4;
// No CMOS RTC is emulated; Linux then skips registering the rtc_cmos device.
constexpr std::uint16_t kBootArchNoCmosRtc = 1u << 5;

constexpr std::uint32_t kMadtPcatCompat = 1u << 0;
constexpr std::uint32_t kLapicEnabled = 1u << 0;
constexpr std::uint8_t kAllProcessors = 0xff;
constexpr std::uint8_t kIsaBus = 0;
// The PIT's ISA IRQ 0 arrives on IOAPIC pin 2, as KVM's default routing wires it.
constexpr std::uint8_t kTimerIrq = 0;
constexpr std::uint32_t kTimerGsi = 2;
// Active high, edge triggered, spelled out rather than "conforms to the bus": with the
// FADT's SCI_INT at 0, Linux takes an override of IRQ 0 for the SCI's and would make a
// "conforming" one level-triggered and active low (acpi_sci_ioapic_setup).
constexpr std::uint16_t kIntiActiveHighEdge = 0x1 | (0x1 << 2);
constexpr std::uint16_t kIntiConforms = 0;
constexpr std::uint8_t kNmiLint = 1;

constexpr std::size_t kTableAlign = 16;

SdtHeader Header(const char (&signature)[5], std::uint8_t revision) {
  SdtHeader h{};
  std::memcpy(h.signature, signature, sizeof(h.signature));
  h.revision = revision;
  std::memcpy(h.oem_id, kOemId, sizeof(h.oem_id));
  std::memcpy(h.oem_table_id, kOemTableId, sizeof(h.oem_table_id));
  h.oem_revision = kOemRevision;
  std::memcpy(h.creator_id, kCreatorId, sizeof(h.creator_id));
  h.creator_revision = kCreatorRevision;
  return h;
}

// Sets the length field of the table just built in `table` and then its checksum.
void Seal(std::vector<std::uint8_t>& table) {
  const auto length = static_cast<std::uint32_t>(table.size());
  std::memcpy(table.data() + offsetof(SdtHeader, length), &length, sizeof(length));
  table[offsetof(SdtHeader, checksum)] = 0;
  table[offsetof(SdtHeader, checksum)] = Checksum(table);
}

std::vector<std::uint8_t> BuildXsdt(std::span<const std::uint64_t> entries) {
  std::vector<std::uint8_t> t;
  Append(t, Header("XSDT", kXsdtRevision));
  for (std::uint64_t addr : entries) Append(t, addr);
  Seal(t);
  return t;
}

std::vector<std::uint8_t> BuildFadt(std::uint64_t dsdt_addr) {
  Fadt f{};
  f.header = Header("FACP", kFadtRevision);
  f.minor_version = kFadtMinorVersion;
  f.flags = kFadtHwReducedAcpi | kFadtPowerButton | kFadtSleepButton;
  f.iapc_boot_arch =
      kBootArch8042 | kBootArchNoVga | kBootArchNoMsi | kBootArchNoAspm | kBootArchNoCmosRtc;
  // X_DSDT supersedes DSDT when non-zero; the 32-bit field must then be zero (5.2.9).
  f.x_dsdt = dsdt_addr;
  std::memcpy(f.hypervisor_vendor_id, kOemTableId, sizeof(f.hypervisor_vendor_id));
  std::vector<std::uint8_t> t;
  Append(t, f);
  Seal(t);
  return t;
}

// The i8042's command/status port, from its data port (Linux's i8042-io.h).
constexpr std::uint16_t kI8042CommandOffset = 4;
// Device names V000..V999.
constexpr std::size_t kMaxVirtioMmioDevices = 1000;

// ISA devices take their ISA IRQ as a PC's would: edge-triggered, active high, which is
// also what Linux assumes for IRQs 0-15 without an override in the MADT, so it logs no
// "IRQ override" complaint.
aml::Bytes IsaIrq(std::uint8_t irq) {
  return aml::Irq(irq, aml::Trigger::kEdge, aml::Polarity::kActiveHigh, aml::Sharing::kExclusive);
}

aml::Bytes Com1(const IsaDevice& com1) {
  return aml::Device(
      "COM1",
      {aml::Name("_HID", aml::EisaId("PNP0501")), aml::Name("_UID", aml::Integer(0)),
       aml::Name("_CRS", aml::ResourceTemplate({aml::Io(com1.port, com1.port, 1,
                                                        static_cast<std::uint8_t>(com1.size)),
                                                IsaIrq(com1.irq)}))});
}

aml::Bytes I8042(const IsaDevice& i8042) {
  const auto command = static_cast<std::uint16_t>(i8042.port + kI8042CommandOffset);
  return aml::Device(
      "PS2_", {aml::Name("_HID", aml::EisaId("PNP0303")),
               aml::Name("_CRS", aml::ResourceTemplate({aml::Io(i8042.port, i8042.port, 1, 1),
                                                        aml::Io(command, command, 1, 1),
                                                        IsaIrq(i8042.irq)}))});
}

// What Linux's virtio_mmio driver matches (its ACPI id table), with the window and the
// interrupt. Edge-triggered, as Firecracker and Cloud Hypervisor declare it: the irqfd
// pulses the IOAPIC pin and never holds it, and virtio_mmio's handler reads the cause from
// the device's InterruptStatus register, so it needs no level to re-check.
aml::Bytes VirtioMmio(std::size_t index, const MmioDevice& device) {
  return aml::Device(
      absl::StrFormat("V%03d", index),
      {aml::Name("_HID", aml::String("LNRO0005")), aml::Name("_UID", aml::Integer(index)),
       // DMA is cache-coherent; x86 assumes it anyway, other architectures need saying.
       aml::Name("_CCA", aml::Integer(1)),
       aml::Name(
           "_CRS",
           aml::ResourceTemplate(
               {aml::Memory32Fixed(/*read_write=*/true, static_cast<std::uint32_t>(device.base),
                                   static_cast<std::uint32_t>(device.size)),
                aml::ExtendedInterrupt(device.gsi, aml::Trigger::kEdge, aml::Polarity::kActiveHigh,
                                       aml::Sharing::kExclusive)}))});
}

absl::Status CheckIsa(const char* name, const std::optional<IsaDevice>& isa) {
  // The IO descriptor's length is a byte; the IRQ descriptor covers IRQs 0-15.
  if (isa && (isa->irq > 15 || isa->size == 0 || isa->size > UINT8_MAX ||
              isa->port + isa->size > 0x10000)) {
    return absl::InvalidArgumentError(absl::StrCat("ACPI tables: ", name, " at port 0x",
                                                   absl::Hex(isa->port), " size ", isa->size,
                                                   " IRQ ", isa->irq, " is not an ISA device"));
  }
  return absl::OkStatus();
}

absl::Status CheckDevices(const AcpiDevices& devices) {
  EMBER_RETURN_IF_ERROR(CheckIsa("COM1", devices.com1));
  EMBER_RETURN_IF_ERROR(CheckIsa("i8042", devices.i8042));
  if (devices.i8042 && devices.i8042->size <= kI8042CommandOffset) {
    return absl::InvalidArgumentError("ACPI tables: the i8042 needs ports for data and command");
  }
  if (devices.virtio_mmio.size() > kMaxVirtioMmioDevices) {
    return absl::InvalidArgumentError(absl::StrCat("ACPI tables: ", devices.virtio_mmio.size(),
                                                   " virtio-mmio devices; at most ",
                                                   kMaxVirtioMmioDevices, " have names"));
  }
  for (const MmioDevice& d : devices.virtio_mmio) {
    if (d.size == 0 || d.base >= kMmioGapEnd || d.size > kMmioGapEnd - d.base ||
        d.gsi >= kIoapicPins) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ACPI tables: virtio-mmio device at 0x", absl::Hex(d.base), " size 0x", absl::Hex(d.size),
          " GSI ", d.gsi, " is not a 32-bit window on an IOAPIC pin"));
    }
  }
  return absl::OkStatus();
}

std::vector<std::uint8_t> BuildDsdt(const AcpiDevices& devices) {
  std::vector<aml::Bytes> system_bus;
  if (devices.com1) system_bus.push_back(Com1(*devices.com1));
  if (devices.i8042) system_bus.push_back(I8042(*devices.i8042));
  for (std::size_t i = 0; i < devices.virtio_mmio.size(); ++i) {
    system_bus.push_back(VirtioMmio(i, devices.virtio_mmio[i]));
  }
  aml::Bytes scope = aml::Scope("\\_SB_", system_bus);
  // Sized once and filled in place: appending the scope after the header makes GCC 12 at -O3
  // report a false -Wstringop-overflow (it loses track of the vector's grown capacity).
  SdtHeader header = Header("DSDT", kDsdtRevision);
  std::vector<std::uint8_t> t(sizeof(header) + scope.size());
  std::memcpy(t.data(), &header, sizeof(header));
  std::copy(scope.begin(), scope.end(), t.begin() + sizeof(header));
  Seal(t);
  return t;
}

std::vector<std::uint8_t> BuildMadt(std::uint32_t vcpu_count) {
  MadtHeader m{};
  m.header = Header("APIC", kMadtRevision);
  m.lapic_addr = kLapicAddr;
  // KVM's in-kernel irqchip includes the dual 8259 PIC.
  m.flags = kMadtPcatCompat;
  std::vector<std::uint8_t> t;
  Append(t, m);

  // vCPU i has APIC id i (the CPUID leaves say so too); the ACPI processor UID is i.
  for (std::uint32_t i = 0; i < vcpu_count; ++i) {
    MadtLapic lapic{};
    lapic.type = kMadtLapic;
    lapic.length = sizeof(MadtLapic);
    lapic.processor_uid = static_cast<std::uint8_t>(i);
    lapic.apic_id = static_cast<std::uint8_t>(i);
    lapic.flags = kLapicEnabled;
    Append(t, lapic);
  }

  MadtIoapic ioapic{};
  ioapic.type = kMadtIoapic;
  ioapic.length = sizeof(MadtIoapic);
  // The MP table gives the IOAPIC the APIC id after the vCPUs; say the same here.
  ioapic.ioapic_id = static_cast<std::uint8_t>(vcpu_count);
  ioapic.address = kIoapicAddr;
  ioapic.gsi_base = 0;
  Append(t, ioapic);

  MadtInterruptOverride timer{};
  timer.type = kMadtInterruptOverride;
  timer.length = sizeof(MadtInterruptOverride);
  timer.bus = kIsaBus;
  timer.source = kTimerIrq;
  timer.gsi = kTimerGsi;
  timer.flags = kIntiActiveHighEdge;
  Append(t, timer);

  MadtLapicNmi nmi{};
  nmi.type = kMadtLapicNmi;
  nmi.length = sizeof(MadtLapicNmi);
  nmi.processor_uid = kAllProcessors;
  nmi.flags = kIntiConforms;
  nmi.lint = kNmiLint;
  Append(t, nmi);

  Seal(t);
  return t;
}

std::uint64_t AlignUp(std::uint64_t value) {
  return (value + kTableAlign - 1) / kTableAlign * kTableAlign;
}

}  // namespace

absl::StatusOr<std::vector<std::uint8_t>> BuildAcpiTables(std::uint64_t base_addr,
                                                          std::uint32_t vcpu_count,
                                                          const AcpiDevices& devices) {
  if (vcpu_count < 1 || vcpu_count > kMaxMpVcpus) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ACPI tables: ", vcpu_count, " vCPUs requested; supported are 1 to ", kMaxMpVcpus));
  }
  if (base_addr % kTableAlign != 0 || base_addr >= 4 * kGiB) {
    return absl::InvalidArgumentError(absl::StrCat("ACPI tables: base address 0x",
                                                   absl::Hex(base_addr),
                                                   " is not 16-byte aligned below 4 GiB"));
  }
  EMBER_RETURN_IF_ERROR(CheckDevices(devices));

  // Lay the tables out first: each one's address goes into the table that points at it.
  std::vector<std::uint8_t> dsdt = BuildDsdt(devices);
  std::vector<std::uint8_t> madt = BuildMadt(vcpu_count);
  constexpr std::size_t kXsdtEntries = 2;
  const std::uint64_t xsdt_addr = AlignUp(base_addr + sizeof(Rsdp));
  const std::uint64_t fadt_addr =
      AlignUp(xsdt_addr + sizeof(SdtHeader) + kXsdtEntries * sizeof(std::uint64_t));
  const std::uint64_t dsdt_addr = AlignUp(fadt_addr + sizeof(Fadt));
  const std::uint64_t madt_addr = AlignUp(dsdt_addr + dsdt.size());
  const std::uint64_t end = madt_addr + madt.size();
  // Firmware tables belong in the 32-bit address space, where a PC's BIOS area is.
  if (end > 4 * kGiB) {
    return absl::InvalidArgumentError(
        absl::StrCat("ACPI tables at 0x", absl::Hex(base_addr), " would reach past 4 GiB"));
  }

  const std::uint64_t xsdt_entries[kXsdtEntries] = {fadt_addr, madt_addr};
  std::vector<std::uint8_t> xsdt = BuildXsdt(xsdt_entries);
  std::vector<std::uint8_t> fadt = BuildFadt(dsdt_addr);

  Rsdp rsdp{};
  std::memcpy(rsdp.signature, "RSD PTR ", sizeof(rsdp.signature));
  std::memcpy(rsdp.oem_id, kOemId, sizeof(rsdp.oem_id));
  rsdp.revision = kRsdpRevision;
  rsdp.length = sizeof(Rsdp);
  rsdp.xsdt_addr = xsdt_addr;
  rsdp.checksum = Checksum(BytesOf(rsdp).first(offsetof(Rsdp, length)));
  rsdp.extended_checksum = Checksum(BytesOf(rsdp));

  std::vector<std::uint8_t> out(end - base_addr, 0);
  auto place = [&](std::uint64_t addr, std::span<const std::uint8_t> bytes) {
    std::memcpy(out.data() + (addr - base_addr), bytes.data(), bytes.size());
  };
  place(base_addr, BytesOf(rsdp));
  place(xsdt_addr, xsdt);
  place(fadt_addr, fadt);
  place(dsdt_addr, dsdt);
  place(madt_addr, madt);
  return out;
}

absl::Status WriteAcpiTables(const base::GuestMemory& memory, std::uint32_t vcpu_count,
                             const AcpiDevices& devices) {
  EMBER_ASSIGN_OR_RETURN(std::vector<std::uint8_t> tables,
                         BuildAcpiTables(kRsdpAddr, vcpu_count, devices));
  if (kRsdpAddr + tables.size() > kAcpiAreaEnd) {
    return absl::InvalidArgumentError(
        absl::StrCat("ACPI tables for ", vcpu_count, " vCPUs and ", devices.virtio_mmio.size(),
                     " virtio devices (", tables.size(), " bytes) do not fit below 0x100000"));
  }
  absl::Status status = memory.Write(kRsdpAddr, tables);
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat("writing the ACPI tables: ", status.message()));
  }
  return absl::OkStatus();
}

}  // namespace ember::arch
