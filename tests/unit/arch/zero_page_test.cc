#include "vmm/arch/x86_64/zero_page.h"

#include <gtest/gtest.h>

#include <cstring>

#include "vmm/arch/x86_64/e820.h"
#include "vmm/arch/x86_64/layout.h"

namespace ember::arch {
namespace {

// Reads a little-endian field of the zero page at the byte offset the boot protocol
// documents (Documentation/arch/x86/zero-page.rst, boot.rst), independently of the struct.
template <typename T>
T At(const boot_params& params, std::size_t offset) {
  T value;
  std::memcpy(&value, reinterpret_cast<const std::uint8_t*>(&params) + offset, sizeof(T));
  return value;
}

ZeroPageInputs SampleInputs() {
  ZeroPageInputs inputs;
  inputs.cmdline_addr = kCmdlineAddr;
  inputs.cmdline_size = 42;
  inputs.e820 = {{0, kEbdaStart, kE820Ram}, {kHimemStart, 127 * kMiB, kE820Ram}};
  return inputs;
}

TEST(ZeroPage, IsOnePageAsTheProtocolDefines) { EXPECT_EQ(sizeof(boot_params), 4096u); }

TEST(ZeroPage, SetupHeaderFieldsSitAtProtocolOffsets) {
  auto params = BuildZeroPage(SampleInputs());
  ASSERT_TRUE(params.ok());
  EXPECT_EQ(At<std::uint16_t>(*params, 0x1fe), 0xaa55);      // boot_flag
  EXPECT_EQ(At<std::uint32_t>(*params, 0x202), 0x53726448u); // "HdrS"
  EXPECT_EQ(At<std::uint8_t>(*params, 0x210), 0xff);         // type_of_loader
  EXPECT_EQ(At<std::uint32_t>(*params, 0x228), kCmdlineAddr); // cmd_line_ptr
  EXPECT_EQ(At<std::uint32_t>(*params, 0x238), 42u);          // cmdline_size
}

TEST(ZeroPage, E820TableSitsAtProtocolOffsets) {
  auto params = BuildZeroPage(SampleInputs());
  ASSERT_TRUE(params.ok());
  EXPECT_EQ(At<std::uint8_t>(*params, 0x1e8), 2);  // e820_entries
  // Entries are packed 20-byte records {u64 addr, u64 size, u32 type} from 0x2d0.
  EXPECT_EQ(At<std::uint64_t>(*params, 0x2d0 + 20), kHimemStart);
  EXPECT_EQ(At<std::uint64_t>(*params, 0x2d0 + 28), 127 * kMiB);
  EXPECT_EQ(At<std::uint32_t>(*params, 0x2d0 + 36), kE820Ram);
}

TEST(ZeroPage, InitrdAboveFourGiBUsesTheExtFields) {
  ZeroPageInputs inputs = SampleInputs();
  inputs.initrd_addr = 0x1'2345'6000;
  inputs.initrd_size = 0x1000;
  auto params = BuildZeroPage(inputs);
  ASSERT_TRUE(params.ok());
  EXPECT_EQ(At<std::uint32_t>(*params, 0x218), 0x2345'6000u);  // ramdisk_image
  EXPECT_EQ(At<std::uint32_t>(*params, 0x0c0), 0x1u);          // ext_ramdisk_image
  EXPECT_EQ(At<std::uint32_t>(*params, 0x21c), 0x1000u);       // ramdisk_size
}

TEST(ZeroPage, AcpiRsdpAddressSitsAtItsOffset) {
  ZeroPageInputs inputs = SampleInputs();
  inputs.acpi_rsdp_addr = 0xe0000;
  auto params = BuildZeroPage(inputs);
  ASSERT_TRUE(params.ok());
  EXPECT_EQ(At<std::uint64_t>(*params, 0x070), 0xe0000u);  // acpi_rsdp_addr
}

TEST(ZeroPage, TooManyE820EntriesIsAnError) {
  ZeroPageInputs inputs = SampleInputs();
  inputs.e820.assign(E820_MAX_ENTRIES_ZEROPAGE + 1, {0, 4096, kE820Ram});
  EXPECT_FALSE(BuildZeroPage(inputs).ok());
}

TEST(E820, SmallGuestHasBaseMemoryAndRamFromOneMiB) {
  auto memory = base::GuestMemory::Create(GuestRamRanges(128 * kMiB));
  ASSERT_TRUE(memory.ok());
  std::vector<E820Entry> expected = {{0, kEbdaStart, kE820Ram},
                                     {kEbdaStart, kHimemStart - kEbdaStart, kE820Reserved},
                                     {kHimemStart, 127 * kMiB, kE820Ram}};
  EXPECT_EQ(BuildE820Map(*memory), expected);
}

TEST(E820, LargeGuestSkipsTheMmioGapAndContinuesAboveFourGiB) {
  auto memory = base::GuestMemory::Create(GuestRamRanges(4 * kGiB));
  ASSERT_TRUE(memory.ok());
  std::vector<E820Entry> expected = {{0, kEbdaStart, kE820Ram},
                                     {kEbdaStart, kHimemStart - kEbdaStart, kE820Reserved},
                                     {kHimemStart, kMmioGapStart - kHimemStart, kE820Ram},
                                     {4 * kGiB, 768 * kMiB, kE820Ram}};
  EXPECT_EQ(BuildE820Map(*memory), expected);
}

TEST(Cmdline, WrittenNulTerminatedAtItsAddress) {
  auto memory = base::GuestMemory::Create(GuestRamRanges(16 * kMiB));
  ASSERT_TRUE(memory.ok());
  ASSERT_TRUE(WriteCmdline(*memory, "console=ttyS0").ok());
  auto bytes = memory->Slice(kCmdlineAddr, 14);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes->data())), "console=ttyS0");
}

TEST(Cmdline, OverTheLimitIsRejected) {
  auto memory = base::GuestMemory::Create(GuestRamRanges(16 * kMiB));
  ASSERT_TRUE(memory.ok());
  EXPECT_TRUE(WriteCmdline(*memory, std::string(kCmdlineMaxSize - 1, 'x')).ok());
  EXPECT_FALSE(WriteCmdline(*memory, std::string(kCmdlineMaxSize, 'x')).ok());
}

}  // namespace
}  // namespace ember::arch
