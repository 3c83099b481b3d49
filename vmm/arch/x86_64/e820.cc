#include "vmm/arch/x86_64/e820.h"

#include "vmm/arch/x86_64/layout.h"

namespace ember::arch {

std::vector<E820Entry> BuildE820Map(const base::GuestMemory& memory) {
  std::vector<E820Entry> map;
  map.push_back({0, kEbdaStart, kE820Ram});
  // The MP table (EBDA) and the ACPI tables (0xE0000) live here; the spec wants them in
  // reserved memory, as Firecracker marks it.
  map.push_back({kEbdaStart, kHimemStart - kEbdaStart, kE820Reserved});
  for (const base::GuestRegion& region : memory.regions()) {
    std::uint64_t start = std::max(region.guest_start, kHimemStart);
    if (start < region.guest_end()) map.push_back({start, region.guest_end() - start, kE820Ram});
  }
  return map;
}

}  // namespace ember::arch
