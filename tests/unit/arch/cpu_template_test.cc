#include "vmm/arch/x86_64/cpu_template.h"

#include <gtest/gtest.h>

#include <cstring>
#include <initializer_list>

namespace ember::arch {
namespace {

constexpr std::uint32_t kAll = 0xffffffff;

std::uint32_t Bits(std::initializer_list<int> bits) {
  std::uint32_t mask = 0;
  for (int b : bits) mask |= 1u << b;
  return mask;
}

kvm_cpuid_entry2 Leaf(std::uint32_t function, std::uint32_t index = 0) {
  kvm_cpuid_entry2 entry{};
  entry.function = function;
  entry.index = index;
  entry.eax = entry.ebx = entry.ecx = entry.edx = kAll;
  return entry;
}

// A host that has every feature bit, with the leaves the baseline touches and a few it
// must drop or leave alone.
std::vector<kvm_cpuid_entry2> EverythingHost() {
  return {Leaf(0x0),        Leaf(0x1),       Leaf(0x4, 0),     Leaf(0x7, 0),     Leaf(0x7, 1),
          Leaf(0xb, 0),     Leaf(0xd, 0),    Leaf(0xd, 1),     Leaf(0xd, 2),     Leaf(0x14, 0),
          Leaf(0x1d, 0),    Leaf(0x1f, 0),   Leaf(0x40000000), Leaf(0x40000001), Leaf(0x80000000),
          Leaf(0x80000001), Leaf(0x80000008)};
}

const kvm_cpuid_entry2* Find(const std::vector<kvm_cpuid_entry2>& entries, std::uint32_t function,
                             std::uint32_t index = 0) {
  for (const auto& e : entries) {
    if (e.function == function && e.index == index) return &e;
  }
  return nullptr;
}

const kvm_cpuid_entry2& Get(const std::vector<kvm_cpuid_entry2>& entries, std::uint32_t function,
                            std::uint32_t index = 0) {
  const kvm_cpuid_entry2* e = Find(entries, function, index);
  if (e == nullptr) {
    ADD_FAILURE() << "leaf 0x" << std::hex << function << "." << index << " missing";
    static const kvm_cpuid_entry2 kEmpty{};
    return kEmpty;
  }
  return *e;
}

std::vector<kvm_cpuid_entry2> Baseline() {
  auto entries = EverythingHost();
  ApplyCpuTemplate(CpuTemplate::kBaseline, entries);
  return entries;
}

TEST(CpuTemplateBaseline, Leaf1KeepsSseThroughSse42PopcntAesAndVirtualisedBitsOnly) {
  // SSE3 PCLMULQDQ SSSE3 SSE4.1 SSE4.2 x2APIC POPCNT TSC-deadline AES hypervisor
  EXPECT_EQ(Get(Baseline(), 0x1).ecx, Bits({0, 1, 9, 19, 20, 21, 23, 24, 25, 31}));
}

TEST(CpuTemplateBaseline, Leaf1DropsXsaveFamilyAvxAndCmpxchg16b) {
  const auto leaf = Get(Baseline(), 0x1);  // a copy: Baseline()'s table dies with this line
  for (int bit : {12 /*FMA*/, 13 /*CX16*/, 26 /*XSAVE*/, 27 /*OSXSAVE*/, 28 /*AVX*/, 29 /*F16C*/,
                  17 /*PCID*/}) {
    EXPECT_EQ(leaf.ecx & (1u << bit), 0u) << bit;
  }
}

TEST(CpuTemplateBaseline, Leaf1EdxKeepsSse2AndDropsHostMonitoringFeatures) {
  // Everything but PSN, DS, ACPI, SS, TM, PBE.
  EXPECT_EQ(Get(Baseline(), 0x1).edx, ~Bits({18, 21, 22, 27, 29, 31}));
  EXPECT_NE(Get(Baseline(), 0x1).edx & (1u << 26), 0u);  // SSE2
}

TEST(CpuTemplateBaseline, Leaf7KeepsOnlySmepSmapAndSpeculationControl) {
  auto entries = Baseline();
  const auto& leaf = Get(entries, 0x7, 0);
  EXPECT_EQ(leaf.eax, 0u);  // no subleaf 1
  EXPECT_EQ(leaf.ebx, Bits({7, 20}));
  EXPECT_EQ(leaf.ecx, 0u);  // no PKU, AVX-512 VBMI, GFNI, VAES, LA57, ...
  EXPECT_EQ(leaf.edx, Bits({10, 26, 27, 28, 29, 31}));
  const auto& sub1 = Get(entries, 0x7, 1);
  EXPECT_EQ(sub1.eax | sub1.ebx | sub1.ecx | sub1.edx, 0u);  // AVX-VNNI, AVX512_BF16, ...
}

TEST(CpuTemplateBaseline, Leaf7DropsAvx2Avx512TsxMpxInvpcidAndAmx) {
  const auto leaf = Get(Baseline(), 0x7, 0);  // a copy: Baseline()'s table dies with this line
  for (int bit : {5 /*AVX2*/, 4 /*HLE*/, 11 /*RTM*/, 10 /*INVPCID*/, 14 /*MPX*/, 16 /*AVX512F*/,
                  30 /*AVX512BW*/}) {
    EXPECT_EQ(leaf.ebx & (1u << bit), 0u) << bit;
  }
  EXPECT_EQ(leaf.edx & Bits({22, 24, 25}), 0u);  // AMX-BF16, AMX-TILE, AMX-INT8
}

TEST(CpuTemplateBaseline, XsaveLeafDescribesOnlyX87AndSse) {
  auto entries = Baseline();
  const auto& sub0 = Get(entries, 0xd, 0);
  EXPECT_EQ(sub0.eax, 0x3u);
  EXPECT_EQ(sub0.edx, 0u);
  EXPECT_EQ(sub0.ecx, 576u);
  const auto& sub1 = Get(entries, 0xd, 1);
  EXPECT_EQ(sub1.eax, 0u);  // XSAVEOPT, XSAVEC, XGETBV1, XSAVES
  const auto& sub2 = Get(entries, 0xd, 2);
  EXPECT_EQ(sub2.eax | sub2.ebx | sub2.ecx | sub2.edx, 0u);  // AVX state
}

TEST(CpuTemplateBaseline, BasicLeavesEndAtXsaveLeaf) {
  auto entries = Baseline();
  EXPECT_EQ(Get(entries, 0x0).eax, 0xdu);
  EXPECT_EQ(Find(entries, 0x14), nullptr);
  EXPECT_EQ(Find(entries, 0x1d), nullptr);
  EXPECT_EQ(Find(entries, 0x1f), nullptr);
}

TEST(CpuTemplateBaseline, MaxBasicLeafIsNeverRaised) {
  std::vector<kvm_cpuid_entry2> entries = {Leaf(0x0)};
  entries[0].eax = 0xb;
  ApplyCpuTemplate(CpuTemplate::kBaseline, entries);
  EXPECT_EQ(Get(entries, 0x0).eax, 0xbu);
}

TEST(CpuTemplateBaseline, ExtendedLeavesKeepLongModeAndDropPostWestmereBits) {
  auto entries = Baseline();
  EXPECT_EQ(Get(entries, 0x80000001).ecx, Bits({0}));  // LAHF/SAHF only
  EXPECT_EQ(Get(entries, 0x80000001).edx, ~Bits({22, 25, 26, 30, 31}));
  EXPECT_EQ(Get(entries, 0x80000008).ebx, ~Bits({0, 1, 2, 4, 8, 9}));
}

TEST(CpuTemplateBaseline, LeavesTopologyAndKvmLeavesAlone) {
  auto entries = Baseline();
  for (auto [function, index] :
       {std::pair{0x4u, 0u}, {0xbu, 0u}, {0x40000000u, 0u}, {0x40000001u, 0u}, {0x80000000u, 0u}}) {
    const auto& e = Get(entries, function, index);
    EXPECT_EQ(e.eax & e.ebx & e.ecx & e.edx, kAll) << std::hex << function;
  }
}

TEST(CpuTemplate, EmberLeavesNameTheTemplate) {
  auto entries = Baseline();
  const auto& base = Get(entries, 0x40000100);
  EXPECT_EQ(base.eax, 0x40000101u);
  char signature[12];
  std::memcpy(signature, &base.ebx, 4);
  std::memcpy(signature + 4, &base.ecx, 4);
  std::memcpy(signature + 8, &base.edx, 4);
  EXPECT_EQ(std::string(signature, 8), "EmberVMM");
  EXPECT_EQ(signature[8], '\0');
  EXPECT_EQ(Get(entries, 0x40000101).eax, 1u);
}

TEST(CpuTemplate, HostChangesNoExistingLeafAndAddsOnlyEmberLeaves) {
  auto original = EverythingHost();
  auto entries = original;
  ApplyCpuTemplate(CpuTemplate::kHost, entries);
  ASSERT_EQ(entries.size(), original.size() + 2);
  for (std::size_t i = 0; i < original.size(); ++i) {
    EXPECT_EQ(std::memcmp(&entries[i], &original[i], sizeof(kvm_cpuid_entry2)), 0) << i;
  }
  EXPECT_EQ(Get(entries, 0x40000101).eax, 0u);
}

TEST(CpuTemplate, ApplyingTwiceDoesNotDuplicateEmberLeaves) {
  auto entries = EverythingHost();
  ApplyCpuTemplate(CpuTemplate::kHost, entries);
  ApplyCpuTemplate(CpuTemplate::kBaseline, entries);
  int count = 0;
  for (const auto& e : entries) count += e.function == 0x40000101 ? 1 : 0;
  EXPECT_EQ(count, 1);
  EXPECT_EQ(Get(entries, 0x40000101).eax, 1u);
}

TEST(CpuTemplateParse, AcceptsHostBaselineAndFirecrackerNone) {
  EXPECT_EQ(ParseCpuTemplate("host").value(), CpuTemplate::kHost);
  EXPECT_EQ(ParseCpuTemplate("None").value(), CpuTemplate::kHost);
  EXPECT_EQ(ParseCpuTemplate("baseline").value(), CpuTemplate::kBaseline);
}

TEST(CpuTemplateParse, UnknownNameFailsListingSupportedNames) {
  auto parsed = ParseCpuTemplate("T2");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  std::string message(parsed.status().message());
  EXPECT_NE(message.find("\"T2\""), std::string::npos) << message;
  EXPECT_NE(message.find("host, baseline"), std::string::npos) << message;
}

TEST(CpuTemplateParse, NamesRoundTrip) {
  for (CpuTemplate t : {CpuTemplate::kHost, CpuTemplate::kBaseline}) {
    EXPECT_EQ(ParseCpuTemplate(CpuTemplateName(t)).value(), t);
  }
}

}  // namespace
}  // namespace ember::arch
