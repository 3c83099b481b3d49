#include "vmm/boot/guest_loader.h"

#include <limits>
#include <optional>

#include "absl/strings/str_format.h"
#include "vmm/arch/x86_64/acpi.h"
#include "vmm/arch/x86_64/boot_cpu.h"
#include "vmm/arch/x86_64/bzimage.h"
#include "vmm/arch/x86_64/e820.h"
#include "vmm/arch/x86_64/elf_loader.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/arch/x86_64/zero_page.h"
#include "vmm/base/status.h"
#include "vmm/boot/payload_decompress.h"

namespace ember::vmm {
namespace {

constexpr std::uint64_t kPageSize = 4096;
// Where a bzImage's 64-bit entry point sits relative to its protected-mode code.
constexpr std::uint64_t kBzImage64BitEntryOffset = 0x200;
// Without a setup header (an ELF vmlinux), Linux accepts an initrd anywhere below 2 GiB.
constexpr std::uint64_t kDefaultInitrdAddrMax = 0x7fffffff;

absl::Status KernelError(const KernelImage& kernel, const absl::Status& status) {
  return absl::InvalidArgumentError("kernel \"" + kernel.name() + "\": " +
                                    std::string(status.message()));
}

struct LoadedKernel {
  std::uint64_t entry;
  std::uint64_t end;
  BootPath path;
  std::optional<setup_header> header;
};

// The standard path: copy the protected-mode kernel to its preferred address and let it
// decompress itself, which needs init_size bytes from there.
absl::StatusOr<LoadedKernel> LoadSelfDecompressing(const base::GuestMemory& memory,
                                                   const arch::BzImage& bz) {
  // ParseBzImage checked that kernel_alignment is a power of two.
  const std::uint64_t align = std::max<std::uint64_t>(bz.header.kernel_alignment, kPageSize);
  std::uint64_t load = std::max<std::uint64_t>(bz.header.pref_address, arch::kHimemStart);
  // Rounding up must not wrap to a low address (the kernel would be copied over the zero
  // page and the page tables).
  if (load > std::numeric_limits<std::uint64_t>::max() - (align - 1)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "pref_address 0x%x cannot be aligned to kernel_alignment 0x%x within 64 bits",
        bz.header.pref_address, align));
  }
  load = (load + align - 1) & ~(align - 1);
  if (!memory.Contains(load, bz.header.init_size)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the kernel needs 0x%x bytes of RAM from 0x%x to decompress itself; guest RAM below "
        "the MMIO gap ends at 0x%x",
        bz.header.init_size, load, memory.regions().front().guest_end()));
  }
  EMBER_RETURN_IF_ERROR(memory.Write(load, bz.protected_mode));
  setup_header header = bz.header;
  header.code32_start = static_cast<std::uint32_t>(load);
  return LoadedKernel{load + kBzImage64BitEntryOffset, load + bz.header.init_size,
                      BootPath::kBzImageSelfDecompressing, header};
}

absl::StatusOr<LoadedKernel> LoadKernel(const base::GuestMemory& memory, const GuestBoot& boot) {
  std::span<const std::uint8_t> image = boot.kernel->bytes();
  if (arch::LooksLikeElf(image)) {
    auto elf = arch::LoadElfKernel(image, memory);
    if (!elf.ok()) return KernelError(*boot.kernel, elf.status());
    return LoadedKernel{elf->entry, elf->end, BootPath::kElf, std::nullopt};
  }
  if (!arch::LooksLikeBzImage(image)) {
    return KernelError(*boot.kernel,
                       absl::InvalidArgumentError("not a kernel image (neither an ELF vmlinux nor "
                                                  "a bzImage)"));
  }
  auto bz = arch::ParseBzImage(image);
  if (!bz.ok()) return KernelError(*boot.kernel, bz.status());

  if (!boot.decompress_on_host || !CanDecompress(bz->format)) {
    auto loaded = LoadSelfDecompressing(memory, *bz);
    if (!loaded.ok()) return KernelError(*boot.kernel, loaded.status());
    return loaded;
  }
  KernelCache no_cache("");
  const KernelCache& cache = boot.cache != nullptr ? *boot.cache : no_cache;
  auto vmlinux = cache.Vmlinux(*boot.kernel, *bz);
  if (!vmlinux.ok()) return KernelError(*boot.kernel, vmlinux.status());
  auto elf = arch::LoadElfKernel(vmlinux->bytes(), memory);
  if (!elf.ok()) return KernelError(*boot.kernel, elf.status());
  // The zero page keeps the bzImage's own setup header, as the boot protocol requires.
  return LoadedKernel{elf->entry, elf->end, BootPath::kBzImageDecompressedOnHost, bz->header};
}

struct LoadedInitrd {
  std::uint64_t addr;
  std::uint64_t size;
};

// Loads the initrd page-aligned as high as the kernel allows (initrd_addr_max) within RAM
// below the MMIO gap, and above the kernel.
absl::StatusOr<LoadedInitrd> LoadInitrd(const base::GuestMemory& memory, const std::string& path,
                                        const LoadedKernel& kernel) {
  auto mapping = MapFileReadOnly(path);
  if (!mapping.ok()) {
    return absl::InvalidArgumentError("initrd: " + std::string(mapping.status().message()));
  }
  std::uint64_t size = mapping->size();
  std::uint64_t addr_max = kernel.header ? kernel.header->initrd_addr_max : kDefaultInitrdAddrMax;
  std::uint64_t top = std::min(memory.regions().front().guest_end(), addr_max + 1);
  if (size > top || ((top - size) & ~(kPageSize - 1)) < kernel.end) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "initrd \"%s\" (%u bytes) does not fit in guest memory between the kernel (ends at "
        "0x%x) and 0x%x",
        path, size, kernel.end, top));
  }
  std::uint64_t addr = (top - size) & ~(kPageSize - 1);
  EMBER_RETURN_IF_ERROR(memory.Write(addr, mapping->bytes()));
  return LoadedInitrd{addr, size};
}

}  // namespace

const char* BootPathName(BootPath path) {
  switch (path) {
    case BootPath::kElf: return "ELF vmlinux";
    case BootPath::kBzImageDecompressedOnHost: return "bzImage, decompressed on the host";
    case BootPath::kBzImageSelfDecompressing: return "bzImage, self-decompressing";
  }
  return "?";
}

absl::StatusOr<LoadedGuest> LoadGuest(const base::GuestMemory& memory, const GuestBoot& boot) {
  EMBER_ASSIGN_OR_RETURN(LoadedKernel kernel, LoadKernel(memory, boot));
  if (kernel.header && kernel.header->cmdline_size != 0 &&
      boot.cmdline.size() > kernel.header->cmdline_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "boot-source.boot_args: the command line is %u bytes; this kernel accepts at most %u",
        boot.cmdline.size(), kernel.header->cmdline_size));
  }

  arch::ZeroPageInputs zero_page;
  zero_page.kernel_header = kernel.header;
  if (!boot.initrd_path.empty()) {
    EMBER_ASSIGN_OR_RETURN(LoadedInitrd initrd, LoadInitrd(memory, boot.initrd_path, kernel));
    zero_page.initrd_addr = initrd.addr;
    zero_page.initrd_size = initrd.size;
  }
  EMBER_RETURN_IF_ERROR(arch::WriteCmdline(memory, boot.cmdline));
  zero_page.cmdline_addr = arch::kCmdlineAddr;
  zero_page.cmdline_size = static_cast<std::uint32_t>(boot.cmdline.size());
  zero_page.e820 = arch::BuildE820Map(memory);
  zero_page.acpi_rsdp_addr = arch::kRsdpAddr;
  EMBER_ASSIGN_OR_RETURN(boot_params params, arch::BuildZeroPage(zero_page));
  EMBER_RETURN_IF_ERROR(memory.WriteObj(arch::kZeroPageAddr, params));
  EMBER_RETURN_IF_ERROR(arch::WriteBootTables(memory));
  return LoadedGuest{kernel.entry, kernel.path};
}

}  // namespace ember::vmm
