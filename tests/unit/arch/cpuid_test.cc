#include "vmm/arch/x86_64/cpuid.h"

#include <gtest/gtest.h>

namespace ember::arch {
namespace {

kvm_cpuid_entry2 Leaf(std::uint32_t function, std::uint32_t index = 0) {
  kvm_cpuid_entry2 entry{};
  entry.function = function;
  entry.index = index;
  entry.eax = entry.ebx = entry.ecx = entry.edx = 0xffffffff;
  return entry;
}

const kvm_cpuid_entry2& Find(const std::vector<kvm_cpuid_entry2>& entries, std::uint32_t function,
                             std::uint32_t index = 0) {
  for (const auto& e : entries) {
    if (e.function == function && e.index == index) return e;
  }
  ADD_FAILURE() << "leaf " << function << " missing";
  return entries.front();
}

TEST(Cpuid, FeatureLeafCarriesApicIdCountAndHypervisorBit) {
  auto entries = NormalizeCpuid({Leaf(1)}, 3, 4);
  const auto& leaf = Find(entries, 1);
  EXPECT_EQ(leaf.ebx >> 24, 3u);           // initial APIC id
  EXPECT_EQ((leaf.ebx >> 16) & 0xff, 4u);  // logical processors
  EXPECT_NE(leaf.ecx & (1u << 31), 0u);    // hypervisor present
}

TEST(Cpuid, ExtendedTopologyDescribesOneCorePerVcpu) {
  auto entries = NormalizeCpuid({Leaf(0xb, 0), Leaf(0xb, 1), Leaf(0xb, 2)}, 2, 3);
  EXPECT_EQ(Find(entries, 0xb, 0).ebx, 1u);         // one thread per core
  EXPECT_EQ(Find(entries, 0xb, 1).ebx, 3u);         // three cores
  EXPECT_EQ(Find(entries, 0xb, 1).eax, 2u);         // id bits for three cores
  EXPECT_EQ(Find(entries, 0xb, 1).edx, 2u);         // x2APIC id
  EXPECT_EQ((Find(entries, 0xb, 2).ecx >> 8) & 0xff, 0u);  // end of levels
}

TEST(Cpuid, PerformanceMonitoringLeafIsHidden) {
  auto entries = NormalizeCpuid({Leaf(0xa)}, 0, 1);
  EXPECT_EQ(Find(entries, 0xa).eax, 0u);
}

}  // namespace
}  // namespace ember::arch
