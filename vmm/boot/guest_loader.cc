#include "vmm/guest_loader.h"

#include "absl/strings/str_format.h"
#include "vmm/arch/x86_64/boot_cpu.h"
#include "vmm/arch/x86_64/e820.h"
#include "vmm/arch/x86_64/elf_loader.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/arch/x86_64/zero_page.h"
#include "vmm/base/status.h"

namespace ember::vmm {
namespace {

constexpr std::uint64_t kPageSize = 4096;

// Loads the initrd page-aligned at the top of RAM below the MMIO gap, where Linux accepts
// it, and above the kernel.
struct LoadedInitrd {
  std::uint64_t addr;
  std::uint64_t size;
};

absl::StatusOr<LoadedInitrd> LoadInitrd(const base::GuestMemory& memory, const std::string& path,
                                         std::uint64_t kernel_end) {
  auto mapping = MapFileReadOnly(path);
  if (!mapping.ok()) {
    return absl::InvalidArgumentError("initrd: " + std::string(mapping.status().message()));
  }
  std::uint64_t size = mapping->size();
  std::uint64_t low_end = memory.regions().front().guest_end();
  if (size > low_end || ((low_end - size) & ~(kPageSize - 1)) < kernel_end) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "initrd \"%s\" (%u bytes) does not fit in guest memory between the kernel (ends at "
        "0x%x) and 0x%x",
        path, size, kernel_end, low_end));
  }
  std::uint64_t addr = (low_end - size) & ~(kPageSize - 1);
  EMBER_RETURN_IF_ERROR(memory.Write(addr, mapping->bytes()));
  return LoadedInitrd{addr, size};
}

}  // namespace

absl::StatusOr<std::uint64_t> LoadGuest(const base::GuestMemory& memory, const GuestBoot& boot) {
  std::span<const std::uint8_t> image = boot.kernel->bytes();
  if (!arch::LooksLikeElf(image)) {
    return absl::InvalidArgumentError("kernel \"" + boot.kernel->name() +
                                      "\" is not an ELF vmlinux image");
  }
  auto kernel = arch::LoadElfKernel(image, memory);
  if (!kernel.ok()) {
    return absl::InvalidArgumentError("kernel \"" + boot.kernel->name() +
                                      "\": " + std::string(kernel.status().message()));
  }

  arch::ZeroPageInputs zero_page;
  if (!boot.initrd_path.empty()) {
    EMBER_ASSIGN_OR_RETURN(LoadedInitrd initrd, LoadInitrd(memory, boot.initrd_path, kernel->end));
    zero_page.initrd_addr = initrd.addr;
    zero_page.initrd_size = initrd.size;
  }
  EMBER_RETURN_IF_ERROR(arch::WriteCmdline(memory, boot.cmdline));
  zero_page.cmdline_addr = arch::kCmdlineAddr;
  zero_page.cmdline_size = static_cast<std::uint32_t>(boot.cmdline.size());
  zero_page.e820 = arch::BuildE820Map(memory);
  EMBER_ASSIGN_OR_RETURN(boot_params params, arch::BuildZeroPage(zero_page));
  EMBER_RETURN_IF_ERROR(memory.WriteObj(arch::kZeroPageAddr, params));
  EMBER_RETURN_IF_ERROR(arch::WriteBootTables(memory));
  return kernel->entry;
}

}  // namespace ember::vmm
