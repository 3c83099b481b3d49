#include "vmm/arch/x86_64/zero_page.h"

#include <span>

#include "vmm/arch/x86_64/layout.h"

namespace ember::arch {
namespace {

constexpr std::uint16_t kBootFlagMagic = 0xaa55;
constexpr std::uint32_t kHeaderMagic = 0x53726448;  // "HdrS"
// "Undefined" boot loader id: we have no id assigned in the boot protocol's registry.
constexpr std::uint8_t kLoaderTypeUndefined = 0xff;
constexpr std::uint32_t kKernelAlignment = 0x1000000;

}  // namespace

absl::StatusOr<boot_params> BuildZeroPage(const ZeroPageInputs& inputs) {
  boot_params params{};
  if (inputs.kernel_header) {
    params.hdr = *inputs.kernel_header;
  } else {
    params.hdr.boot_flag = kBootFlagMagic;
    params.hdr.header = kHeaderMagic;
    params.hdr.kernel_alignment = kKernelAlignment;
  }
  params.hdr.type_of_loader = kLoaderTypeUndefined;
  params.hdr.cmd_line_ptr = static_cast<std::uint32_t>(inputs.cmdline_addr);
  params.ext_cmd_line_ptr = static_cast<std::uint32_t>(inputs.cmdline_addr >> 32);
  params.hdr.cmdline_size = inputs.cmdline_size;
  params.acpi_rsdp_addr = inputs.acpi_rsdp_addr;
  params.hdr.ramdisk_image = static_cast<std::uint32_t>(inputs.initrd_addr);
  params.ext_ramdisk_image = static_cast<std::uint32_t>(inputs.initrd_addr >> 32);
  params.hdr.ramdisk_size = static_cast<std::uint32_t>(inputs.initrd_size);
  params.ext_ramdisk_size = static_cast<std::uint32_t>(inputs.initrd_size >> 32);

  if (inputs.e820.size() > E820_MAX_ENTRIES_ZEROPAGE) {
    return absl::InvalidArgumentError("e820 map has " + std::to_string(inputs.e820.size()) +
                                      " entries; the zero page holds at most " +
                                      std::to_string(E820_MAX_ENTRIES_ZEROPAGE));
  }
  params.e820_entries = static_cast<std::uint8_t>(inputs.e820.size());
  for (std::size_t i = 0; i < inputs.e820.size(); ++i) {
    params.e820_table[i].addr = inputs.e820[i].addr;
    params.e820_table[i].size = inputs.e820[i].size;
    params.e820_table[i].type = inputs.e820[i].type;
  }
  return params;
}

absl::Status WriteCmdline(const base::GuestMemory& memory, const std::string& cmdline) {
  if (cmdline.size() + 1 > kCmdlineMaxSize) {
    return absl::InvalidArgumentError("kernel command line is " + std::to_string(cmdline.size()) +
                                      " bytes; the limit is " +
                                      std::to_string(kCmdlineMaxSize - 1));
  }
  // c_str() includes the NUL terminator in its size()+1 bytes.
  return memory.Write(kCmdlineAddr, std::span(reinterpret_cast<const std::uint8_t*>(cmdline.c_str()),
                                              cmdline.size() + 1));
}

}  // namespace ember::arch
