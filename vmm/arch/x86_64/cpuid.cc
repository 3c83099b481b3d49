#include "vmm/arch/x86_64/cpuid.h"

#include <bit>

namespace ember::arch {
namespace {

constexpr std::uint32_t kLeafFeatures = 0x1;
constexpr std::uint32_t kLeafCacheTopology = 0x4;
constexpr std::uint32_t kLeafPerfMon = 0xa;
constexpr std::uint32_t kLeafExtendedTopology = 0xb;
// V2 extended topology: same layout as 0xb, and Linux prefers it when present.
constexpr std::uint32_t kLeafExtendedTopologyV2 = 0x1f;

constexpr std::uint32_t kEcxHypervisor = 1u << 31;
constexpr std::uint32_t kEdxHtt = 1u << 28;
constexpr std::uint32_t kClflushLineSize = 8;  // in 8-byte units: 64-byte lines

// Topology level types in leaf 0xb ECX[15:8].
constexpr std::uint32_t kLevelSmt = 1;
constexpr std::uint32_t kLevelCore = 2;

std::uint32_t CeilLog2(std::uint32_t n) { return n <= 1 ? 0 : 32 - std::countl_zero(n - 1); }

}  // namespace

std::vector<kvm_cpuid_entry2> NormalizeCpuid(std::vector<kvm_cpuid_entry2> entries,
                                             std::uint32_t vcpu_id, std::uint32_t vcpu_count) {
  for (kvm_cpuid_entry2& e : entries) {
    switch (e.function) {
      case kLeafFeatures:
        e.ebx = (vcpu_id << 24) | (vcpu_count << 16) | (kClflushLineSize << 8);
        e.ecx |= kEcxHypervisor;
        if (vcpu_count > 1) e.edx |= kEdxHtt; else e.edx &= ~kEdxHtt;
        break;
      case kLeafCacheTopology:
        // EAX[31:26]: cores per package minus one; EAX[25:14]: threads sharing this cache
        // minus one — caches are per core except the last level, shared by the package.
        e.eax &= 0x3fff;
        e.eax |= (vcpu_count - 1) << 26;
        if (((e.eax >> 5) & 0x7) >= 3) e.eax |= (vcpu_count - 1) << 14;
        break;
      case kLeafPerfMon:
        e.eax = e.ebx = e.ecx = e.edx = 0;
        break;
      case kLeafExtendedTopology:
      case kLeafExtendedTopologyV2:
        e.edx = vcpu_id;  // x2APIC id
        if (e.index == 0) {
          e.eax = 0;  // no SMT: the thread level adds no id bits
          e.ebx = 1;
          e.ecx = (kLevelSmt << 8) | e.index;
        } else if (e.index == 1) {
          e.eax = CeilLog2(vcpu_count);
          e.ebx = vcpu_count;
          e.ecx = (kLevelCore << 8) | e.index;
        } else {
          e.eax = e.ebx = 0;
          e.ecx = e.index;  // level type 0: end of the list
        }
        break;
      default:
        break;
    }
  }
  return entries;
}

}  // namespace ember::arch
