#include "vmm/arch/x86_64/elf_loader.h"

#include <elf.h>

#include <cstring>

#include "absl/strings/str_format.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/base/status.h"

namespace ember::arch {
namespace {

absl::Status Invalid(const std::string& what) {
  return absl::InvalidArgumentError("invalid ELF kernel: " + what);
}

// Copies a header out of the file: the file's bytes may be unaligned for the struct.
template <typename T>
T ReadHeader(std::span<const std::uint8_t> image, std::uint64_t offset) {
  T value;
  std::memcpy(&value, image.data() + offset, sizeof(T));
  return value;
}

bool RangeInFile(std::span<const std::uint8_t> image, std::uint64_t offset, std::uint64_t size) {
  return offset <= image.size() && size <= image.size() - offset;
}

}  // namespace

bool LooksLikeElf(std::span<const std::uint8_t> image) {
  return image.size() >= SELFMAG && std::memcmp(image.data(), ELFMAG, SELFMAG) == 0;
}

absl::StatusOr<LoadedKernel> LoadElfKernel(std::span<const std::uint8_t> image,
                                           const base::GuestMemory& memory) {
  if (image.size() < sizeof(Elf64_Ehdr)) return Invalid("file is shorter than an ELF header");
  if (!LooksLikeElf(image)) return Invalid("no ELF magic");
  auto ehdr = ReadHeader<Elf64_Ehdr>(image, 0);
  if (ehdr.e_ident[EI_CLASS] != ELFCLASS64) return Invalid("not a 64-bit ELF file");
  if (ehdr.e_ident[EI_DATA] != ELFDATA2LSB) return Invalid("not little-endian");
  if (ehdr.e_machine != EM_X86_64) {
    return Invalid(absl::StrFormat("machine %u is not x86-64", ehdr.e_machine));
  }
  if (ehdr.e_type != ET_EXEC) return Invalid("not an executable (e_type is not ET_EXEC)");
  if (ehdr.e_phentsize != sizeof(Elf64_Phdr)) return Invalid("unexpected program header size");
  if (ehdr.e_phnum == 0) return Invalid("no program headers");
  if (!RangeInFile(image, ehdr.e_phoff, std::uint64_t{ehdr.e_phnum} * sizeof(Elf64_Phdr))) {
    return Invalid("program headers lie beyond the end of the file (truncated?)");
  }

  // Validate every segment before copying any, so a bad image leaves memory untouched.
  std::vector<Elf64_Phdr> loads;
  for (std::uint16_t i = 0; i < ehdr.e_phnum; ++i) {
    auto phdr = ReadHeader<Elf64_Phdr>(image, ehdr.e_phoff + std::uint64_t{i} * sizeof(Elf64_Phdr));
    if (phdr.p_type != PT_LOAD) continue;
    if (!RangeInFile(image, phdr.p_offset, phdr.p_filesz)) {
      return Invalid(absl::StrFormat("segment %u data lies beyond the end of the file (truncated?)",
                                     i));
    }
    if (phdr.p_filesz > phdr.p_memsz) {
      return Invalid(absl::StrFormat("segment %u has more file bytes than memory bytes", i));
    }
    if (phdr.p_paddr < kHimemStart) {
      return Invalid(absl::StrFormat(
          "segment %u at 0x%x overlaps the boot area below 0x%x (zero page, page tables)", i,
          phdr.p_paddr, kHimemStart));
    }
    if (!memory.Contains(phdr.p_paddr, phdr.p_memsz)) {
      return Invalid(absl::StrFormat(
          "segment %u (0x%x+0x%x) does not fit in guest memory (RAM ends at 0x%x)", i,
          phdr.p_paddr, phdr.p_memsz, memory.end()));
    }
    loads.push_back(phdr);
  }
  if (loads.empty()) return Invalid("no loadable segments");

  LoadedKernel kernel{ehdr.e_entry, 0};
  bool entry_loaded = false;
  for (const Elf64_Phdr& phdr : loads) {
    // Guest memory is a fresh memfd, already zero, so the BSS part needs no writes (and
    // costs no resident pages).
    EMBER_RETURN_IF_ERROR(
        memory.Write(phdr.p_paddr, image.subspan(phdr.p_offset, phdr.p_filesz)));
    kernel.end = std::max(kernel.end, phdr.p_paddr + phdr.p_memsz);
    if (ehdr.e_entry >= phdr.p_paddr && ehdr.e_entry - phdr.p_paddr < phdr.p_memsz) {
      entry_loaded = true;
    }
  }
  if (!entry_loaded) {
    return Invalid(absl::StrFormat("entry point 0x%x is not inside a loaded segment", ehdr.e_entry));
  }
  return kernel;
}

}  // namespace ember::arch
