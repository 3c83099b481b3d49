#include "vmm/arch/x86_64/acpi.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/files.h"
#include "tests/support/process.h"
#include "vmm/arch/x86_64/layout.h"

namespace ember::arch {
namespace {

// Offsets and sizes below are read off the ACPI 6.5 specification (chapter 5.2),
// independently of the builder.
constexpr std::uint64_t kBase = 0xe0000;
constexpr std::size_t kRsdpV1Size = 20;
constexpr std::size_t kRsdpSize = 36;
constexpr std::size_t kSdtHeaderSize = 36;
constexpr std::size_t kMadtEntriesStart = 44;

using Bytes = std::vector<std::uint8_t>;

// The devices ember-vmm declares, with two virtio-mmio devices placed as it places them.
AcpiDevices EmberDevices(std::size_t virtio_count = 2) {
  AcpiDevices devices{
      .com1 = IsaDevice{0x3f8, 8, 4}, .i8042 = IsaDevice{0x60, 5, 1}, .virtio_mmio = {}};
  for (std::uint32_t i = 0; i < virtio_count; ++i) {
    devices.virtio_mmio.push_back({0xd0001000 + i * 0x1000u, 0x1000, 5 + i});
  }
  return devices;
}

Bytes Build(std::uint32_t vcpus, const AcpiDevices& devices = EmberDevices()) {
  auto tables = BuildAcpiTables(kBase, vcpus, devices);
  EXPECT_TRUE(tables.ok()) << tables.status();
  return tables.ok() ? *tables : Bytes{};
}

template <typename T>
T Get(const Bytes& t, std::uint64_t at) {
  T v{};
  EXPECT_LE(at + sizeof(T), t.size());
  if (at + sizeof(T) <= t.size()) std::memcpy(&v, t.data() + at, sizeof(T));
  return v;
}
std::string Str(const Bytes& t, std::uint64_t at, std::size_t len) {
  return at + len <= t.size() ? std::string(t.begin() + static_cast<std::ptrdiff_t>(at),
                                            t.begin() + static_cast<std::ptrdiff_t>(at + len))
                              : std::string();
}
std::uint8_t Sum(const Bytes& t, std::uint64_t at, std::size_t len) {
  if (at + len > t.size()) return 0xff;
  return static_cast<std::uint8_t>(
      std::accumulate(t.begin() + static_cast<std::ptrdiff_t>(at),
                      t.begin() + static_cast<std::ptrdiff_t>(at + len), 0u));
}

// A table's offset in the bytes, from its guest-physical address.
std::uint64_t At(std::uint64_t guest_addr) { return guest_addr - kBase; }
std::uint32_t Length(const Bytes& t, std::uint64_t off) { return Get<std::uint32_t>(t, off + 4); }

// Follows RSDP -> XSDT the way an OS does and returns the offsets of the listed tables.
std::vector<std::uint64_t> XsdtTables(const Bytes& t) {
  const std::uint64_t xsdt = At(Get<std::uint64_t>(t, 24));
  std::vector<std::uint64_t> out;
  for (std::uint64_t at = xsdt + kSdtHeaderSize; at < xsdt + Length(t, xsdt); at += 8) {
    out.push_back(At(Get<std::uint64_t>(t, at)));
  }
  return out;
}

std::uint64_t FindTable(const Bytes& t, const std::string& signature) {
  for (std::uint64_t off : XsdtTables(t)) {
    if (Str(t, off, 4) == signature) return off;
  }
  if (signature == "DSDT") {
    const std::uint64_t fadt = FindTable(t, "FACP");
    return At(Get<std::uint64_t>(t, fadt + 140));  // X_DSDT
  }
  ADD_FAILURE() << signature << " not reachable from the RSDP";
  return 0;
}

struct Entry {
  std::uint8_t type;
  std::uint64_t offset;
};

// Walks the MADT's interrupt controller structures by their own length bytes.
std::vector<Entry> MadtEntries(const Bytes& t) {
  const std::uint64_t madt = FindTable(t, "APIC");
  const std::uint64_t end = madt + Length(t, madt);
  std::vector<Entry> entries;
  for (std::uint64_t at = madt + kMadtEntriesStart; at < end;) {
    const std::uint8_t length = Get<std::uint8_t>(t, at + 1);
    if (length == 0) {
      ADD_FAILURE() << "zero-length MADT entry";
      break;
    }
    entries.push_back({Get<std::uint8_t>(t, at), at});
    at += length;
    EXPECT_LE(at, end);
  }
  return entries;
}

std::vector<Entry> MadtEntriesOfType(const Bytes& t, std::uint8_t type) {
  std::vector<Entry> out;
  for (const Entry& e : MadtEntries(t)) {
    if (e.type == type) out.push_back(e);
  }
  return out;
}

TEST(AcpiTables, RsdpHasSignatureRevisionLengthAndBothChecksums) {
  Bytes t = Build(2);
  EXPECT_EQ(Str(t, 0, 8), "RSD PTR ");
  EXPECT_EQ(Str(t, 9, 6), "EMBER ");
  EXPECT_EQ(t[15], 2);  // revision: ACPI 2.0+, XSDT present
  EXPECT_EQ(Get<std::uint32_t>(t, 20), kRsdpSize);
  EXPECT_EQ(Sum(t, 0, kRsdpV1Size), 0);
  EXPECT_EQ(Sum(t, 0, kRsdpSize), 0);
}

TEST(AcpiTables, RsdpPointsAtAnXsdtAndNoRsdt) {
  Bytes t = Build(2);
  EXPECT_EQ(Get<std::uint32_t>(t, 16), 0u);
  EXPECT_EQ(Str(t, At(Get<std::uint64_t>(t, 24)), 4), "XSDT");
}

TEST(AcpiTables, XsdtListsFadtThenMadt) {
  Bytes t = Build(2);
  std::vector<std::uint64_t> tables = XsdtTables(t);
  ASSERT_EQ(tables.size(), 2u);
  EXPECT_EQ(Str(t, tables[0], 4), "FACP");
  EXPECT_EQ(Str(t, tables[1], 4), "APIC");
}

TEST(AcpiTables, EveryTableSumsToZeroOverItsLengthAndNamesEmber) {
  Bytes t = Build(2);
  for (const char* signature : {"XSDT", "FACP", "DSDT", "APIC"}) {
    SCOPED_TRACE(signature);
    const std::uint64_t off =
        std::string(signature) == "XSDT" ? At(Get<std::uint64_t>(t, 24)) : FindTable(t, signature);
    EXPECT_GE(Length(t, off), kSdtHeaderSize);
    EXPECT_EQ(Sum(t, off, Length(t, off)), 0);
    EXPECT_EQ(Str(t, off + 10, 6), "EMBER ");
    EXPECT_EQ(Str(t, off + 16, 7), "EMBERVM");
  }
}

TEST(AcpiTables, TablesStartOnSixteenByteBoundariesWithoutOverlapping) {
  Bytes t = Build(32);
  std::vector<std::uint64_t> starts = {At(Get<std::uint64_t>(t, 24)), FindTable(t, "FACP"),
                                       FindTable(t, "DSDT"), FindTable(t, "APIC")};
  std::uint64_t previous_end = kRsdpSize;
  for (std::uint64_t off : starts) {
    EXPECT_EQ((kBase + off) % 16, 0u);
    EXPECT_GE(off, previous_end);
    previous_end = off + Length(t, off);
  }
  EXPECT_LE(previous_end, t.size());
}

TEST(AcpiTables, FadtIsRevisionSixHardwareReducedAndPointsAtDsdtThroughXDsdt) {
  Bytes t = Build(2);
  const std::uint64_t fadt = FindTable(t, "FACP");
  EXPECT_EQ(Length(t, fadt), 276u);
  EXPECT_EQ(t[fadt + 8], 6);                                      // revision
  EXPECT_EQ(t[fadt + 131], 5);                                    // minor version: 6.5
  EXPECT_NE(Get<std::uint32_t>(t, fadt + 112) & (1u << 20), 0u);  // HW_REDUCED_ACPI
  EXPECT_EQ(Get<std::uint32_t>(t, fadt + 40), 0u);  // 32-bit DSDT unused when X_DSDT is set
  EXPECT_EQ(Str(t, At(Get<std::uint64_t>(t, fadt + 140)), 4), "DSDT");
}

TEST(AcpiTables, FadtHasNoFixedHardwareBlocksOrSci) {
  Bytes t = Build(2);
  const std::uint64_t fadt = FindTable(t, "FACP");
  EXPECT_EQ(Get<std::uint16_t>(t, fadt + 46), 0);        // SCI_INT
  EXPECT_EQ(Get<std::uint32_t>(t, fadt + 48), 0u);       // SMI_CMD
  EXPECT_EQ(Get<std::uint32_t>(t, fadt + 76), 0u);       // PM_TMR_BLK
  EXPECT_EQ(Get<std::uint64_t>(t, fadt + 208 + 4), 0u);  // X_PM_TMR_BLK address
}

TEST(AcpiTables, FadtBootArchKeepsTheI8042AndSaysNoVga) {
  Bytes t = Build(2);
  const std::uint16_t boot_arch = Get<std::uint16_t>(t, FindTable(t, "FACP") + 109);
  EXPECT_NE(boot_arch & (1u << 1), 0u);  // 8042 present: Linux keeps probing it
  EXPECT_NE(boot_arch & (1u << 2), 0u);  // VGA not present
}

TEST(AcpiTables, DsdtIsAValidRevisionTwoTable) {
  Bytes t = Build(2);
  const std::uint64_t dsdt = FindTable(t, "DSDT");
  EXPECT_GE(t[dsdt + 8], 2);  // 64-bit AML integers
  EXPECT_EQ(Sum(t, dsdt, Length(t, dsdt)), 0);
}

TEST(AcpiTables, MadtNamesTheLocalApicAddressAndPcatCompat) {
  Bytes t = Build(2);
  const std::uint64_t madt = FindTable(t, "APIC");
  EXPECT_EQ(Get<std::uint32_t>(t, madt + 36), 0xfee00000u);
  EXPECT_EQ(Get<std::uint32_t>(t, madt + 40) & 1u, 1u);
}

TEST(AcpiTables, MadtHasOneEnabledLocalApicPerVcpuWithApicIdEqualToIndex) {
  Bytes t = Build(4);
  std::vector<Entry> lapics = MadtEntriesOfType(t, 0);
  ASSERT_EQ(lapics.size(), 4u);
  for (std::size_t i = 0; i < lapics.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(t[lapics[i].offset + 1], 8);                            // length
    EXPECT_EQ(t[lapics[i].offset + 2], i);                            // ACPI processor UID
    EXPECT_EQ(t[lapics[i].offset + 3], i);                            // APIC id
    EXPECT_EQ(Get<std::uint32_t>(t, lapics[i].offset + 4) & 1u, 1u);  // Enabled
  }
}

TEST(AcpiTables, MadtIoapicTakesTheIdAfterTheVcpusAtTheStandardAddressFromGsiZero) {
  Bytes t = Build(3);
  std::vector<Entry> ioapics = MadtEntriesOfType(t, 1);
  ASSERT_EQ(ioapics.size(), 1u);
  const std::uint64_t at = ioapics[0].offset;
  EXPECT_EQ(t[at + 1], 12);
  EXPECT_EQ(t[at + 2], 3);  // id
  EXPECT_EQ(Get<std::uint32_t>(t, at + 4), 0xfec00000u);
  EXPECT_EQ(Get<std::uint32_t>(t, at + 8), 0u);
}

TEST(AcpiTables, MadtRoutesIsaIrqZeroToGsiTwoEdgeTriggeredActiveHigh) {
  Bytes t = Build(2);
  std::vector<Entry> overrides = MadtEntriesOfType(t, 2);
  ASSERT_EQ(overrides.size(), 1u);
  const std::uint64_t at = overrides[0].offset;
  EXPECT_EQ(t[at + 1], 10);
  EXPECT_EQ(t[at + 2], 0);  // ISA bus
  EXPECT_EQ(t[at + 3], 0);  // IRQ 0
  EXPECT_EQ(Get<std::uint32_t>(t, at + 4), 2u);
  EXPECT_EQ(Get<std::uint16_t>(t, at + 8), 0x5);  // active high, edge
}

TEST(AcpiTables, MadtConnectsNmiToLint1OfEveryProcessor) {
  Bytes t = Build(2);
  std::vector<Entry> nmis = MadtEntriesOfType(t, 4);
  ASSERT_EQ(nmis.size(), 1u);
  EXPECT_EQ(t[nmis[0].offset + 1], 6);
  EXPECT_EQ(t[nmis[0].offset + 2], 0xff);
  EXPECT_EQ(t[nmis[0].offset + 5], 1);
}

TEST(AcpiTables, OneVcpuGetsOneLocalApicAndTheIoapicIdOne) {
  Bytes t = Build(1);
  EXPECT_EQ(MadtEntriesOfType(t, 0).size(), 1u);
  std::vector<Entry> ioapics = MadtEntriesOfType(t, 1);
  ASSERT_EQ(ioapics.size(), 1u);
  EXPECT_EQ(t[ioapics[0].offset + 2], 1);
}

TEST(AcpiTables, ThirtyTwoVcpusAndNineteenVirtioDevicesAreWrittenAtTheRsdpAddressBelowOneMiB) {
  auto memory = base::GuestMemory::Create({{0, 2 * kMiB}});
  ASSERT_TRUE(memory.ok()) << memory.status();
  ASSERT_TRUE(WriteAcpiTables(*memory, 32, EmberDevices(19)).ok());

  Bytes t(kAcpiAreaEnd - kRsdpAddr);
  ASSERT_TRUE(memory->Read(kRsdpAddr, t).ok());
  EXPECT_EQ(Str(t, 0, 8), "RSD PTR ");
  EXPECT_EQ(MadtEntriesOfType(t, 0).size(), 32u);
  const std::uint64_t madt = FindTable(t, "APIC");
  EXPECT_EQ(Sum(t, madt, Length(t, madt)), 0);
}

TEST(AcpiTables, RejectsZeroAndThirtyThreeVcpus) {
  EXPECT_EQ(BuildAcpiTables(kBase, 0, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildAcpiTables(kBase, 33, {}).status().code(), absl::StatusCode::kInvalidArgument);
  auto memory = base::GuestMemory::Create({{0, 2 * kMiB}});
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_FALSE(WriteAcpiTables(*memory, 0, {}).ok());
  EXPECT_FALSE(WriteAcpiTables(*memory, 33, {}).ok());
}

TEST(AcpiTables, RejectsAnUnalignedBase) {
  EXPECT_EQ(BuildAcpiTables(kBase + 8, 2, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(AcpiTables, WriteFailsWhenGuestMemoryStopsBeforeTheRsdpArea) {
  auto memory = base::GuestMemory::Create({{0, kRsdpAddr}});
  ASSERT_TRUE(memory.ok()) << memory.status();
  absl::Status status = WriteAcpiTables(*memory, 2, EmberDevices());
  EXPECT_FALSE(status.ok());
  EXPECT_NE(std::string(status.message()).find("ACPI"), std::string::npos) << status;
}


Bytes Dsdt(const Bytes& t) {
  const std::uint64_t dsdt = FindTable(t, "DSDT");
  if (dsdt + Length(t, dsdt) > t.size()) return {};
  return Bytes(t.begin() + static_cast<std::ptrdiff_t>(dsdt),
               t.begin() + static_cast<std::ptrdiff_t>(dsdt + Length(t, dsdt)));
}

std::size_t Count(const Bytes& haystack, std::string_view needle) {
  std::string text(haystack.begin(), haystack.end());
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

TEST(AcpiDsdt, WithoutDevicesHoldsAnEmptySystemBusScope) {
  Bytes dsdt = Dsdt(Build(1, {}));
  EXPECT_EQ(dsdt, Dsdt(Build(1, {})));
  ASSERT_EQ(dsdt.size(), kSdtHeaderSize + 7);
  EXPECT_EQ(Bytes(dsdt.begin() + kSdtHeaderSize, dsdt.end()),
            (Bytes{0x10, 0x06, '\\', '_', 'S', 'B', '_'}));
  EXPECT_EQ(Sum(dsdt, 0, dsdt.size()), 0);
}

TEST(AcpiDsdt, DeclaresEachVirtioDeviceAsLnro0005AndTheLegacyDevicesByEisaId) {
  Bytes dsdt = Dsdt(Build(2, EmberDevices(3)));
  EXPECT_EQ(Count(dsdt, std::string("\x0dLNRO0005\0", 10)), 3u);
  EXPECT_EQ(Count(dsdt, "V000"), 1u);
  EXPECT_EQ(Count(dsdt, "V002"), 1u);
  EXPECT_EQ(Count(dsdt, "\x0c\x41\xd0\x05\x01"), 1u);  // EisaId ("PNP0501")
  EXPECT_EQ(Count(dsdt, "\x0c\x41\xd0\x03\x03"), 1u);  // EisaId ("PNP0303")
  EXPECT_EQ(Sum(dsdt, 0, dsdt.size()), 0);
}

TEST(AcpiDsdt, RejectsDevicesItCannotDescribe) {
  AcpiDevices high_irq = EmberDevices();
  high_irq.com1->irq = 16;
  EXPECT_EQ(BuildAcpiTables(kBase, 1, high_irq).status().code(),
            absl::StatusCode::kInvalidArgument);
  AcpiDevices short_i8042 = EmberDevices();
  short_i8042.i8042->size = 4;
  EXPECT_FALSE(BuildAcpiTables(kBase, 1, short_i8042).ok());
  AcpiDevices past_4g = EmberDevices();
  past_4g.virtio_mmio[1].base = 4 * kGiB - 0x800;
  EXPECT_FALSE(BuildAcpiTables(kBase, 1, past_4g).ok());
  AcpiDevices no_pin = EmberDevices();
  no_pin.virtio_mmio[0].gsi = 24;
  EXPECT_FALSE(BuildAcpiTables(kBase, 1, no_pin).ok());
}

// iasl and acpiexec (Debian's acpica-tools, which tests/setup.sh installs) are ACPICA's
// compiler, disassembler and interpreter: the AML parser and resource code Linux runs, so
// their reading of the DSDT is the guest's. Empty when `tool` is not on PATH.
std::string FindAcpicaTool(const std::string& tool) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    std::string candidate = dir + "/" + tool;
    if (!dir.empty() && ::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

using ::ember::testing::ReadFile;

// A scratch directory holding the DSDT as a file, removed with everything iasl wrote there.
class DsdtFile {
 public:
  explicit DsdtFile(const Bytes& dsdt)
      : path_(ember::testing::WriteTempFile("dsdt.aml", std::string(dsdt.begin(), dsdt.end()))),
        dir_(path_.substr(0, path_.rfind('/'))) {}
  ~DsdtFile() { std::filesystem::remove_all(dir_); }
  DsdtFile(const DsdtFile&) = delete;
  DsdtFile& operator=(const DsdtFile&) = delete;

  [[nodiscard]] const std::string& path() const { return path_; }
  // Where iasl's output for prefix `name` goes: dir/name.dsl, dir/name.aml.
  [[nodiscard]] std::string Prefix(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string path_;
  std::string dir_;
};

struct Disassembly {
  std::string dsl;  // the ASL iasl reconstructs
  std::string log;  // what it said doing so
};

// Has iasl disassemble the DSDT into ASL.
Disassembly DisassembleDsdt(const std::string& iasl, const DsdtFile& file) {
  ember::testing::ProcessResult r =
      ember::testing::RunProcess({iasl, "-p", file.Prefix("disassembled"), "-d", file.path()});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  return {ReadFile(file.Prefix("disassembled") + ".dsl"), r.out + r.err};
}

// ASL text with each run of white space made one space, so layout does not matter.
std::string Squeeze(const std::string& text) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

// How iasl writes back one virtio-mmio device, squeezed.
std::string VirtioAsl(const std::string& name, const std::string& uid, const std::string& base,
                      const std::string& gsi) {
  return Squeeze("Device (" + name + R"()
        {
            Name (_HID, "LNRO0005")  // _HID: Hardware ID
            Name (_UID, )" + uid + R"()  // _UID: Unique ID
            Name (_CCA, One)  // _CCA: Cache Coherency Attribute
            Name (_CRS, ResourceTemplate ()  // _CRS: Current Resource Settings
            {
                Memory32Fixed (ReadWrite,
                    )" + base + R"(,         // Address Base
                    0x00001000,         // Address Length
                    )
                Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )
                {
                    )" + gsi + R"(,
                }
            })
        })");
}

TEST(AcpiDsdt, IaslDisassemblesTheDevicesTheirIdsAndResources) {
  const std::string iasl = FindAcpicaTool("iasl");
  if (iasl.empty()) GTEST_SKIP() << "iasl not found on PATH (Debian package acpica-tools)";
  DsdtFile file(Dsdt(Build(2, EmberDevices(2))));
  Disassembly d = DisassembleDsdt(iasl, file);
  std::cout << d.dsl;  // the evidence, for a reader of the test log
  EXPECT_EQ(d.log.find("Error"), std::string::npos) << d.log;
  EXPECT_EQ(d.log.find("Warning"), std::string::npos) << d.log;
  const std::string dsl = Squeeze(d.dsl);
  EXPECT_NE(dsl.find(Squeeze(R"(Scope (\_SB)
    {
        Device (COM1)
        {
            Name (_HID, EisaId ("PNP0501") /* 16550A-compatible COM Serial Port */)  // _HID: Hardware ID
            Name (_UID, Zero)  // _UID: Unique ID
            Name (_CRS, ResourceTemplate ()  // _CRS: Current Resource Settings
            {
                IO (Decode16,
                    0x03F8,             // Range Minimum
                    0x03F8,             // Range Maximum
                    0x01,               // Alignment
                    0x08,               // Length
                    )
                IRQ (Edge, ActiveHigh, Exclusive, )
                    {4}
            })
        }

        Device (PS2)
        {
            Name (_HID, EisaId ("PNP0303") /* IBM Enhanced Keyboard (101/102-key, PS/2 Mouse) */)  // _HID: Hardware ID
            Name (_CRS, ResourceTemplate ()  // _CRS: Current Resource Settings
            {
                IO (Decode16,
                    0x0060,             // Range Minimum
                    0x0060,             // Range Maximum
                    0x01,               // Alignment
                    0x01,               // Length
                    )
                IO (Decode16,
                    0x0064,             // Range Minimum
                    0x0064,             // Range Maximum
                    0x01,               // Alignment
                    0x01,               // Length
                    )
                IRQ (Edge, ActiveHigh, Exclusive, )
                    {1}
            })
        }
)")),
            std::string::npos)
      << d.dsl;
  EXPECT_NE(dsl.find(VirtioAsl("V000", "Zero", "0xD0001000", "0x00000005")), std::string::npos)
      << d.dsl;
  EXPECT_NE(dsl.find(VirtioAsl("V001", "One", "0xD0002000", "0x00000006")), std::string::npos)
      << d.dsl;
}

// ACPICA's compiler, given back the ASL its disassembler read out of our DSDT, emits
// the same AML: every encoding choice (PkgLength sizes, integer prefixes, descriptor
// layouts, buffer sizes) is the one iasl makes. -on keeps "\_SB" spelled from the root,
// as we spell it, instead of shortening it to "_SB" at the top level.
TEST(AcpiDsdt, IaslRecompilesItsDisassemblyToTheSameAml) {
  const std::string iasl = FindAcpicaTool("iasl");
  if (iasl.empty()) GTEST_SKIP() << "iasl not found on PATH (Debian package acpica-tools)";
  Bytes dsdt = Dsdt(Build(2, EmberDevices(19)));
  DsdtFile file(dsdt);
  (void)DisassembleDsdt(iasl, file);
  ember::testing::ProcessResult r = ember::testing::RunProcess(
      {iasl, "-on", "-p", file.Prefix("recompiled"), file.Prefix("disassembled") + ".dsl"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("0 Errors, 0 Warnings"), std::string::npos) << r.out;
  std::string recompiled = ReadFile(file.Prefix("recompiled") + ".aml");
  ASSERT_EQ(recompiled.size(), dsdt.size());
  // The header differs in its compiler id and checksum; the AML after it must not.
  EXPECT_EQ(recompiled.substr(kSdtHeaderSize),
            std::string(dsdt.begin() + kSdtHeaderSize, dsdt.end()));
}

// How acpiexec prints a one-port IO(Decode16) range as resource `index`, squeezed.
std::string IoResource(const std::string& index, const std::string& port,
                       const std::string& length) {
  return Squeeze("[" + index + R"(] I/O Resource
           Address Decoding : Decode16
            Address Minimum : )" + port + R"(
            Address Maximum : )" + port + R"(
                  Alignment : 01
             Address Length : )" + length);
}

// How acpiexec prints an edge-triggered, active-high ISA IRQ as resource `index`, squeezed.
std::string IsaIrqResource(const std::string& index, const std::string& irq) {
  return Squeeze("[" + index + R"(] IRQ Resource
          Descriptor Length : 03
                 Triggering : Edge
                   Polarity : ActiveHigh
                    Sharing : Exclusive
            Interrupt Count : 01
             Interrupt List : )" + irq);
}

// acpiexec loads the DSDT into an ACPICA namespace as Linux's acpi_load_tables does, then
// converts each _CRS into the resource structures Linux's drivers receive
// (acpi_walk_resources): what the serial, i8042 and virtio_mmio drivers will be given.
TEST(AcpiDsdt, AcpiexecLoadsTheDsdtAndConvertsEachDevicesResources) {
  const std::string acpiexec = FindAcpicaTool("acpiexec");
  if (acpiexec.empty()) GTEST_SKIP() << "acpiexec not found on PATH (Debian package acpica-tools)";
  DsdtFile file(Dsdt(Build(2, EmberDevices(2))));
  ember::testing::ProcessResult r = ember::testing::RunProcess(
      {acpiexec, "-b", "Resources \\_SB.COM1; Resources \\_SB.PS2_; Resources \\_SB.V001",
       file.path()},
      std::chrono::seconds(30));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string log = Squeeze(r.out + r.err);
  EXPECT_NE(log.find("ACPI: 1 ACPI AML tables successfully acquired and loaded"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(log.find("ACPI Error"), std::string::npos) << r.out;
  EXPECT_EQ(log.find("ACPI Exception"), std::string::npos) << r.out;
  EXPECT_NE(log.find(IoResource("00", "03F8", "08") + " " + IsaIrqResource("01", "4")),
            std::string::npos)
      << r.out;
  EXPECT_NE(log.find(IoResource("00", "0060", "01") + " " + IoResource("01", "0064", "01") + " " +
                     IsaIrqResource("02", "1")),
            std::string::npos)
      << r.out;
  EXPECT_NE(log.find(Squeeze(R"([00] 32-Bit Fixed Memory Range Resource
              Write Protect : ReadWrite
                    Address : D0002000
             Address Length : 00001000

[01] Extended IRQ Resource
                       Type : ResourceConsumer
                 Triggering : Edge
                   Polarity : ActiveHigh
                    Sharing : Exclusive
      Resource Source Index : 00
            Resource Source : [Not Specified]
            Interrupt Count : 01
                    Dword00 : 00000006)")),
            std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace ember::arch
