#include "vmm/arch/x86_64/acpi.h"

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <string>
#include <vector>

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

Bytes Build(std::uint32_t vcpus) {
  auto tables = BuildAcpiTables(kBase, vcpus);
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

TEST(AcpiTables, ThirtyTwoVcpusAreWrittenAtTheRsdpAddressBelowOneMiB) {
  auto memory = base::GuestMemory::Create({{0, 2 * kMiB}});
  ASSERT_TRUE(memory.ok()) << memory.status();
  ASSERT_TRUE(WriteAcpiTables(*memory, 32).ok());

  Bytes t(kAcpiAreaEnd - kRsdpAddr);
  ASSERT_TRUE(memory->Read(kRsdpAddr, t).ok());
  EXPECT_EQ(Str(t, 0, 8), "RSD PTR ");
  EXPECT_EQ(MadtEntriesOfType(t, 0).size(), 32u);
  const std::uint64_t madt = FindTable(t, "APIC");
  EXPECT_EQ(Sum(t, madt, Length(t, madt)), 0);
}

TEST(AcpiTables, RejectsZeroAndThirtyThreeVcpus) {
  EXPECT_EQ(BuildAcpiTables(kBase, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildAcpiTables(kBase, 33).status().code(), absl::StatusCode::kInvalidArgument);
  auto memory = base::GuestMemory::Create({{0, 2 * kMiB}});
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_FALSE(WriteAcpiTables(*memory, 0).ok());
  EXPECT_FALSE(WriteAcpiTables(*memory, 33).ok());
}

TEST(AcpiTables, RejectsAnUnalignedBase) {
  EXPECT_EQ(BuildAcpiTables(kBase + 8, 2).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(AcpiTables, WriteFailsWhenGuestMemoryStopsBeforeTheRsdpArea) {
  auto memory = base::GuestMemory::Create({{0, kRsdpAddr}});
  ASSERT_TRUE(memory.ok()) << memory.status();
  absl::Status status = WriteAcpiTables(*memory, 2);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(std::string(status.message()).find("ACPI"), std::string::npos) << status;
}

}  // namespace
}  // namespace ember::arch
