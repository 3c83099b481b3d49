#include "vmm/arch/x86_64/elf_loader.h"

#include <elf.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "vmm/arch/x86_64/layout.h"

namespace ember::arch {
namespace {

constexpr std::uint64_t kLoadAddr = 2 * kMiB;
constexpr std::size_t kPayloadOffset = sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr);

// A minimal valid x86-64 executable: one PT_LOAD segment of `payload` at kLoadAddr with
// some BSS after it. Tests corrupt one field at a time.
struct ElfImage {
  Elf64_Ehdr ehdr{};
  Elf64_Phdr phdr{};
  std::vector<std::uint8_t> payload{0xf4, 0xeb, 0xfd, 0x90};  // hlt; jmp .-1; nop

  ElfImage() {
    std::memcpy(ehdr.e_ident, ELFMAG, SELFMAG);
    ehdr.e_ident[EI_CLASS] = ELFCLASS64;
    ehdr.e_ident[EI_DATA] = ELFDATA2LSB;
    ehdr.e_ident[EI_VERSION] = EV_CURRENT;
    ehdr.e_type = ET_EXEC;
    ehdr.e_machine = EM_X86_64;
    ehdr.e_version = EV_CURRENT;
    ehdr.e_entry = kLoadAddr;
    ehdr.e_phoff = sizeof(Elf64_Ehdr);
    ehdr.e_ehsize = sizeof(Elf64_Ehdr);
    ehdr.e_phentsize = sizeof(Elf64_Phdr);
    ehdr.e_phnum = 1;
    phdr.p_type = PT_LOAD;
    phdr.p_offset = kPayloadOffset;
    phdr.p_paddr = phdr.p_vaddr = kLoadAddr;
    phdr.p_filesz = payload.size();
    phdr.p_memsz = 0x1000;
  }

  std::vector<std::uint8_t> Bytes() const {
    std::vector<std::uint8_t> bytes(kPayloadOffset + payload.size());
    std::memcpy(bytes.data(), &ehdr, sizeof(ehdr));
    std::memcpy(bytes.data() + sizeof(ehdr), &phdr, sizeof(phdr));
    std::memcpy(bytes.data() + kPayloadOffset, payload.data(), payload.size());
    return bytes;
  }
};

class ElfLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto memory = base::GuestMemory::Create(GuestRamRanges(16 * kMiB));
    ASSERT_TRUE(memory.ok());
    memory_.emplace(std::move(*memory));
  }

  absl::StatusOr<LoadedKernel> Load(const std::vector<std::uint8_t>& bytes) {
    return LoadElfKernel(bytes, *memory_);
  }

  void ExpectRejected(const std::vector<std::uint8_t>& bytes, const std::string& message_part) {
    auto result = Load(bytes);
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(result.status().message().find(message_part), std::string::npos)
        << result.status().message();
    // Nothing was written: the load address still holds zeros.
    auto first = memory_->ReadObj<std::uint32_t>(kLoadAddr);
    ASSERT_TRUE(first.ok());
    EXPECT_EQ(*first, 0u);
  }

  std::optional<base::GuestMemory> memory_;
};

TEST_F(ElfLoaderTest, ValidImageLoadsAtItsPhysicalAddress) {
  auto kernel = Load(ElfImage().Bytes());
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->entry, kLoadAddr);
  EXPECT_EQ(kernel->end, kLoadAddr + 0x1000);
  auto code = memory_->ReadObj<std::uint32_t>(kLoadAddr);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0x90fdebf4u);
}

TEST_F(ElfLoaderTest, TruncatedHeaderIsRejected) {
  auto bytes = ElfImage().Bytes();
  bytes.resize(sizeof(Elf64_Ehdr) - 1);
  ExpectRejected(bytes, "shorter than an ELF header");
}

TEST_F(ElfLoaderTest, TruncatedProgramHeadersAreRejected) {
  auto bytes = ElfImage().Bytes();
  bytes.resize(sizeof(Elf64_Ehdr) + 10);
  ExpectRejected(bytes, "program headers");
}

TEST_F(ElfLoaderTest, TruncatedSegmentDataIsRejected) {
  auto bytes = ElfImage().Bytes();
  bytes.resize(bytes.size() - 1);
  ExpectRejected(bytes, "beyond the end of the file");
}

TEST_F(ElfLoaderTest, NotElfIsRejected) {
  auto bytes = ElfImage().Bytes();
  bytes[0] = 'M';
  ExpectRejected(bytes, "no ELF magic");
}

TEST_F(ElfLoaderTest, ThirtyTwoBitClassIsRejected) {
  ElfImage image;
  image.ehdr.e_ident[EI_CLASS] = ELFCLASS32;
  ExpectRejected(image.Bytes(), "not a 64-bit");
}

TEST_F(ElfLoaderTest, OtherMachineIsRejected) {
  ElfImage image;
  image.ehdr.e_machine = EM_AARCH64;
  ExpectRejected(image.Bytes(), "not x86-64");
}

TEST_F(ElfLoaderTest, SharedObjectIsRejected) {
  ElfImage image;
  image.ehdr.e_type = ET_DYN;
  ExpectRejected(image.Bytes(), "not an executable");
}

TEST_F(ElfLoaderTest, SegmentOutsideGuestMemoryIsRejected) {
  ElfImage image;
  image.phdr.p_paddr = 15 * kMiB;
  image.phdr.p_memsz = 2 * kMiB;  // runs past the 16 MiB of RAM
  image.ehdr.e_entry = image.phdr.p_paddr;
  ExpectRejected(image.Bytes(), "does not fit in guest memory");
}

TEST_F(ElfLoaderTest, SegmentWhoseEndWrapsAroundIsRejected) {
  ElfImage image;
  image.phdr.p_memsz = ~std::uint64_t{0} - 0x100;
  ExpectRejected(image.Bytes(), "does not fit in guest memory");
}

TEST_F(ElfLoaderTest, SegmentOverlappingTheZeroPageIsRejected) {
  ElfImage image;
  image.phdr.p_paddr = kZeroPageAddr;
  image.ehdr.e_entry = kZeroPageAddr;
  ExpectRejected(image.Bytes(), "overlaps the boot area");
}

TEST_F(ElfLoaderTest, MoreFileBytesThanMemoryBytesIsRejected) {
  ElfImage image;
  image.phdr.p_memsz = 2;
  ExpectRejected(image.Bytes(), "more file bytes than memory bytes");
}

TEST_F(ElfLoaderTest, EntryOutsideLoadedSegmentsIsRejected) {
  ElfImage image;
  image.ehdr.e_entry = 8 * kMiB;
  auto result = Load(image.Bytes());
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("entry point"), std::string::npos);
}

TEST_F(ElfLoaderTest, NoLoadableSegmentIsRejected) {
  ElfImage image;
  image.phdr.p_type = PT_NOTE;
  ExpectRejected(image.Bytes(), "no loadable segments");
}

}  // namespace
}  // namespace ember::arch
