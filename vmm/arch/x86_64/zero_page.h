#pragma once

#include <asm/bootparam.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "vmm/arch/x86_64/e820.h"
#include "vmm/base/guest_memory.h"

namespace ember::arch {

// What the boot loader tells the kernel through the zero page (struct boot_params).
struct ZeroPageInputs {
  // A bzImage's setup header, copied into the zero page as the boot protocol requires;
  // absent for an ELF vmlinux, whose zero page carries only what the loader fills in.
  std::optional<setup_header> kernel_header;
  std::uint64_t cmdline_addr = 0;
  std::uint32_t cmdline_size = 0;  // bytes, excluding the terminating NUL
  std::uint64_t initrd_addr = 0;
  std::uint64_t initrd_size = 0;
  std::vector<E820Entry> e820;
  // Where the ACPI RSDP is, so the kernel need not scan for it (0: let it scan).
  std::uint64_t acpi_rsdp_addr = 0;
};

// Builds the zero page for `inputs`. Fails when the e820 map does not fit.
[[nodiscard]] absl::StatusOr<boot_params> BuildZeroPage(const ZeroPageInputs& inputs);

// Writes the command line, NUL-terminated, at kCmdlineAddr. Fails when it is longer than
// kCmdlineMaxSize allows.
[[nodiscard]] absl::Status WriteCmdline(const base::GuestMemory& memory, const std::string& cmdline);

}  // namespace ember::arch
