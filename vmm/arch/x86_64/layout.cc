#include "vmm/arch/x86_64/layout.h"

#include <algorithm>

namespace ember::arch {

std::vector<base::GuestMemory::Range> GuestRamRanges(std::uint64_t mem_bytes) {
  std::vector<base::GuestMemory::Range> ranges;
  std::uint64_t low = std::min(mem_bytes, kMmioGapStart);
  ranges.push_back({0, low});
  if (mem_bytes > low) ranges.push_back({kMmioGapEnd, mem_bytes - low});
  return ranges;
}

}  // namespace ember::arch
