#pragma once

#include <cstdint>
#include <vector>

#include "vmm/base/guest_memory.h"

namespace ember::arch {

// E820 types from the boot protocol (Documentation/arch/x86/zero-page.rst).
constexpr std::uint32_t kE820Ram = 1;
constexpr std::uint32_t kE820Reserved = 2;

struct E820Entry {
  std::uint64_t addr;
  std::uint64_t size;
  std::uint32_t type;
  bool operator==(const E820Entry&) const = default;
};

// The memory map the guest is told about: base memory up to the EBDA, the EBDA and BIOS
// area up to 1 MiB reserved (MP and ACPI tables), RAM from 1 MiB to the MMIO gap (or the end
// of RAM), and RAM above 4 GiB.
[[nodiscard]] std::vector<E820Entry> BuildE820Map(const base::GuestMemory& memory);

}  // namespace ember::arch
