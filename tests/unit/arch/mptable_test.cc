#include "vmm/arch/x86_64/mptable.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <numeric>
#include <string>

#include "vmm/arch/x86_64/layout.h"

namespace ember::arch {
namespace {

// Offsets and sizes below are read off the MP spec 1.4, independently of the builder.
constexpr std::uint64_t kBase = 0x9fc00;
constexpr std::size_t kPointerSize = 16;
constexpr std::size_t kHeaderSize = 44;

std::vector<std::uint8_t> Build(std::uint32_t vcpus, std::uint64_t base = kBase) {
  auto table = BuildMpTable(base, vcpus);
  EXPECT_TRUE(table.ok()) << table.status();
  return table.ok() ? *table : std::vector<std::uint8_t>{};
}

std::uint32_t U32(const std::vector<std::uint8_t>& t, std::size_t at) {
  std::uint32_t v;
  std::memcpy(&v, t.data() + at, sizeof(v));
  return v;
}
std::uint16_t U16(const std::vector<std::uint8_t>& t, std::size_t at) {
  std::uint16_t v;
  std::memcpy(&v, t.data() + at, sizeof(v));
  return v;
}
std::uint8_t Sum(const std::vector<std::uint8_t>& t, std::size_t at, std::size_t len) {
  return static_cast<std::uint8_t>(
      std::accumulate(t.begin() + static_cast<std::ptrdiff_t>(at),
                      t.begin() + static_cast<std::ptrdiff_t>(at + len), 0u));
}

// Offset of the configuration table inside the built bytes, found through the pointer.
std::size_t ConfigOffset(const std::vector<std::uint8_t>& t, std::uint64_t base = kBase) {
  return U32(t, 4) - base;
}

struct Entry {
  std::uint8_t type;
  std::size_t offset;
};

// Walks the base entries by their spec-defined lengths.
std::vector<Entry> Entries(const std::vector<std::uint8_t>& t) {
  const std::size_t config = ConfigOffset(t);
  const std::size_t end = config + U16(t, config + 4);
  std::vector<Entry> entries;
  for (std::size_t at = config + kHeaderSize; at < end;) {
    std::uint8_t type = t[at];
    entries.push_back({type, at});
    at += type == 0 ? 20 : 8;
    EXPECT_LE(at, end);
  }
  return entries;
}

std::vector<Entry> OfType(const std::vector<std::uint8_t>& t, std::uint8_t type) {
  std::vector<Entry> out;
  for (const Entry& e : Entries(t)) {
    if (e.type == type) out.push_back(e);
  }
  return out;
}

TEST(MpTable, FloatingPointerHasSignatureLengthRevisionAndValidChecksum) {
  auto t = Build(2);
  EXPECT_EQ(std::string(t.begin(), t.begin() + 4), "_MP_");
  EXPECT_EQ(t[8], 1);   // length in 16-byte paragraphs
  EXPECT_EQ(t[9], 4);   // spec 1.4
  EXPECT_EQ(t[11], 0);  // no default configuration: use the table
  EXPECT_EQ(Sum(t, 0, kPointerSize), 0);
}

TEST(MpTable, PointerPointsAtTheConfigurationTableHeader) {
  auto t = Build(2);
  EXPECT_EQ(U32(t, 4), kBase + kPointerSize);
  std::size_t config = ConfigOffset(t);
  EXPECT_EQ(std::string(t.begin() + static_cast<std::ptrdiff_t>(config),
                        t.begin() + static_cast<std::ptrdiff_t>(config + 4)),
            "PCMP");
}

TEST(MpTable, SignatureIsSixteenByteAlignedInGuestMemory) {
  EXPECT_EQ(kEbdaStart % 16, 0u);
  EXPECT_FALSE(BuildMpTable(kBase + 8, 1).ok());
}

TEST(MpTable, ConfigurationTableChecksumCoversHeaderAndEntries) {
  for (std::uint32_t vcpus : {1u, 2u, 7u, 32u}) {
    auto t = Build(vcpus);
    std::size_t config = ConfigOffset(t);
    std::uint16_t length = U16(t, config + 4);
    ASSERT_EQ(config + length, t.size()) << vcpus;
    EXPECT_EQ(Sum(t, config, length), 0) << vcpus;
  }
}

TEST(MpTable, HeaderNamesSpecLapicAndEntryCount) {
  auto t = Build(3);
  std::size_t config = ConfigOffset(t);
  EXPECT_EQ(t[config + 6], 4);                        // spec 1.4
  EXPECT_EQ(U32(t, config + 36), 0xfee00000u);        // local APIC address
  EXPECT_EQ(U16(t, config + 34), Entries(t).size());  // entry count
  EXPECT_EQ(U16(t, config + 40), 0);                  // no extended entries
  EXPECT_EQ(t.size(), MpTableSize(3));
}

TEST(MpTable, EntriesAreSortedByType) {
  auto entries = Entries(Build(4));
  for (std::size_t i = 1; i < entries.size(); ++i) {
    EXPECT_LE(entries[i - 1].type, entries[i].type) << i;
  }
}

TEST(MpTable, OneEnabledProcessorPerVcpuWithOnlyTheFirstAsBsp) {
  auto t = Build(5);
  auto cpus = OfType(t, 0);
  ASSERT_EQ(cpus.size(), 5u);
  for (std::size_t i = 0; i < cpus.size(); ++i) {
    std::size_t at = cpus[i].offset;
    EXPECT_EQ(t[at + 1], i);                       // APIC id
    EXPECT_NE(t[at + 3] & 1, 0) << i;              // enabled
    EXPECT_EQ((t[at + 3] & 2) != 0, i == 0) << i;  // BSP
    EXPECT_NE(U32(t, at + 8) & (1u << 9), 0u);     // feature flags claim an APIC
  }
}

TEST(MpTable, OneIsaBus) {
  auto t = Build(1);
  auto buses = OfType(t, 1);
  ASSERT_EQ(buses.size(), 1u);
  EXPECT_EQ(std::string(t.begin() + static_cast<std::ptrdiff_t>(buses[0].offset + 2),
                        t.begin() + static_cast<std::ptrdiff_t>(buses[0].offset + 8)),
            "ISA   ");
}

TEST(MpTable, IoapicTakesTheApicIdAfterTheVcpusAtTheStandardAddress) {
  auto t = Build(4);
  auto ioapics = OfType(t, 2);
  ASSERT_EQ(ioapics.size(), 1u);
  std::size_t at = ioapics[0].offset;
  EXPECT_EQ(t[at + 1], 4);      // id = vCPU count
  EXPECT_EQ(t[at + 2], 0x11);   // KVM's IOAPIC version
  EXPECT_EQ(t[at + 3] & 1, 1);  // usable
  EXPECT_EQ(U32(t, at + 4), 0xfec00000u);
}

TEST(MpTable, IsaIrqsReachTheirPinsWithTheTimerOnPinTwo) {
  auto t = Build(2);
  std::map<int, int> pin_of_irq;
  for (const Entry& e : OfType(t, 3)) {
    EXPECT_EQ(t[e.offset + 1], 0);  // INT
    EXPECT_EQ(t[e.offset + 4], 0);  // ISA bus
    EXPECT_EQ(t[e.offset + 6], 2);  // the IOAPIC's id
    EXPECT_TRUE(pin_of_irq.emplace(t[e.offset + 5], t[e.offset + 7]).second);
  }
  EXPECT_EQ(pin_of_irq.size(), 23u);
  EXPECT_EQ(pin_of_irq.at(0), 2);
  EXPECT_FALSE(pin_of_irq.contains(2));  // the PIC cascade is not an interrupt source
  for (int irq = 1; irq < 24; ++irq) {
    if (irq != 2) {
      EXPECT_EQ(pin_of_irq.at(irq), irq);
    }
  }
}

TEST(MpTable, DeviceGsisAllHaveIoInterruptEntries) {
  auto t = Build(1);
  std::map<int, int> pin_of_irq;
  for (const Entry& e : OfType(t, 3)) pin_of_irq[t[e.offset + 5]] = t[e.offset + 7];
  for (std::uint32_t gsi = kFirstDeviceGsi; gsi <= kLastDeviceGsi; ++gsi) {
    ASSERT_TRUE(pin_of_irq.contains(static_cast<int>(gsi))) << gsi;
    EXPECT_EQ(pin_of_irq.at(static_cast<int>(gsi)), static_cast<int>(gsi));
  }
}

TEST(MpTable, LocalInterruptsAreExtIntOnLint0AndNmiOnLint1) {
  auto t = Build(2);
  auto lints = OfType(t, 4);
  ASSERT_EQ(lints.size(), 2u);
  EXPECT_EQ(t[lints[0].offset + 1], 3);  // ExtINT
  EXPECT_EQ(t[lints[0].offset + 7], 0);  // LINT0
  EXPECT_EQ(t[lints[1].offset + 1], 1);  // NMI
  EXPECT_EQ(t[lints[1].offset + 7], 1);  // LINT1
}

TEST(MpTable, RejectsZeroAndThirtyThreeVcpus) {
  auto zero = BuildMpTable(kBase, 0);
  auto too_many = BuildMpTable(kBase, 33);
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_many.status().message().find("1 to 32"), absl::string_view::npos);
}

TEST(MpTable, ThirtyTwoVcpusFitBelowTheEndOfBaseMemory) {
  EXPECT_LE(kEbdaStart + MpTableSize(32), 0xa0000u);
  auto memory = base::GuestMemory::Create({{0, 1 * kMiB}});
  ASSERT_TRUE(memory.ok()) << memory.status();
  ASSERT_TRUE(WriteMpTable(*memory, 32).ok());
  auto signature = memory->ReadObj<std::uint32_t>(kEbdaStart);
  ASSERT_TRUE(signature.ok());
  EXPECT_EQ(*signature, 0x5f504d5fu);  // "_MP_"
}

TEST(MpTable, WriteFailsWhenGuestMemoryDoesNotCoverBaseMemory) {
  auto memory = base::GuestMemory::Create({{0, 0x9f000}});
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_FALSE(WriteMpTable(*memory, 1).ok());
}

TEST(MpTable, WriteRejectsOutOfRangeVcpuCount) {
  auto memory = base::GuestMemory::Create({{0, 1 * kMiB}});
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_EQ(WriteMpTable(*memory, 0).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ember::arch
