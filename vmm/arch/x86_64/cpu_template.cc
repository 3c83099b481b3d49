#include "vmm/arch/x86_64/cpu_template.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace ember::arch {
namespace {

constexpr std::uint32_t Bit(int n) { return 1u << n; }

// The baseline keeps what every x86-64 server CPU since Intel Westmere / AMD Bulldozer
// runs without XSAVE-managed state, minus CMPXCHG16B (which some targets, like the
// emulator on the development machines, cannot run): roughly QEMU's x86-64-v2 model
// without CX16, plus AES-NI and PCLMULQDQ (legacy SSE encodings on all those CPUs; TLS
// needs them). Firecracker's T2 family keeps more (AVX2, XSAVE) because its hosts are all
// Intel Haswell or later; ours must also move between vendors and emulators.
//
// Registers whose layout still grows (leaf 1 ECX, leaf 7, 0x8000_0001 ECX) are filtered
// by allowlist, so features a future host adds stay hidden. Registers whose layout is
// frozen use a denylist.

// Leaf 1 ECX: allowlist.
// clang-format off
constexpr std::uint32_t kLeaf1EcxKeep =
    Bit(0) |   // SSE3
    Bit(1) |   // PCLMULQDQ: legacy encoding, on every target CPU
    Bit(9) |   // SSSE3
    Bit(19) |  // SSE4.1
    Bit(20) |  // SSE4.2
    Bit(21) |  // x2APIC: KVM's LAPIC emulates it on any host
    Bit(23) |  // POPCNT
    Bit(24) |  // TSC-deadline timer: emulated by KVM's LAPIC
    Bit(25) |  // AES-NI: legacy encoding, on every target CPU
    Bit(31);   // hypervisor present
// clang-format on
// Dropped: DTES64, MONITOR, DS-CPL, VMX, SMX, EIST, TM2, CNXT-ID, SDBG, xTPR, PDCM, DCA
// (host hardware the guest must not program); FMA, AVX, F16C (VEX: need XSAVE state);
// XSAVE, OSXSAVE (the XSAVE family); CMPXCHG16B (excluded by definition); PCID (absent on
// AMD before Zen 3: a guest with CR4.PCIDE set could not restore there); MOVBE, RDRAND
// (not on Westmere/Bulldozer).

// Leaf 1 EDX: denylist of hardware monitoring/debug features KVM does not virtualise.
constexpr std::uint32_t kLeaf1EdxDrop = Bit(18) |  // PSN
                                        Bit(21) |  // DS (debug store)
                                        Bit(22) |  // ACPI thermal MSRs
                                        Bit(27) |  // SS (self snoop)
                                        Bit(29) |  // TM
                                        Bit(31);   // PBE

// Leaf 7 subleaf 0: allowlists. Every instruction-set feature here is from AVX's
// generation or later (FSGSBASE, BMI1/2, AVX2, HLE/RTM, INVPCID, MPX, AVX-512*, ADX,
// RDSEED, CLFLUSHOPT, CLWB, SHA, PKU/OSPKE, UMIP, GFNI/VAES/VPCLMULQDQ, LA57, RDPID, AMX,
// SERIALIZE, TSXLDTRK, CET, ...), so none is kept.
constexpr std::uint32_t kLeaf7EbxKeep =
    Bit(7) |  // SMEP: guest-kernel hardening on every host since 2013/2017; too costly to drop
    Bit(20);  // SMAP: likewise
constexpr std::uint32_t kLeaf7EcxKeep = 0;
// Speculation-control interfaces: KVM virtualises these MSRs and every host patched since
// 2018 has them; hiding them would leave the guest unmitigated.
constexpr std::uint32_t kLeaf7EdxKeep = Bit(10) |  // MD_CLEAR (VERW flushes buffers)
                                        Bit(26) |  // IBRS/IBPB (IA32_SPEC_CTRL)
                                        Bit(27) |  // STIBP
                                        Bit(28) |  // L1D_FLUSH
                                        Bit(29) |  // IA32_ARCH_CAPABILITIES (KVM emulates it)
                                        Bit(31);   // SSBD

// Leaf 0xD: only the x87 and SSE state components, in the legacy 512-byte area plus the
// 64-byte XSAVE header, and no XSAVEOPT/XSAVEC/XGETBV1/XSAVES/XFD (subleaf 1).
constexpr std::uint32_t kXcr0X87Sse = Bit(0) | Bit(1);
constexpr std::uint32_t kXsaveLegacySize = 512 + 64;

// 0x8000_0001 ECX: allowlist.
constexpr std::uint32_t kExt1EcxKeep = Bit(0);  // LAHF/SAHF in 64-bit mode (x86-64-v2)
// Dropped: SVM (nested virtualisation), LZCNT/ABM, PREFETCHW (not on Westmere), SSE4A,
// XOP, FMA4, TBM and the other AMD-only or post-AVX bits, MONITORX, topology extensions.
// 0x8000_0001 EDX: denylist.
constexpr std::uint32_t kExt1EdxDrop = Bit(22) |  // MMXEXT (AMD only)
                                       Bit(25) |  // FFXSR (AMD only)
                                       Bit(26) |  // 1 GiB pages: not on Nehalem; EPT walks
                                                  // guest tables in hardware, so not safe
                                                  // to restore where absent
                                       Bit(30) |  // 3DNow! extensions (AMD only)
                                       Bit(31);   // 3DNow! (AMD only)
// 0x8000_0008 EBX: denylist of instructions; the AMD speculation-control bits stay.
constexpr std::uint32_t kExt8EbxDrop = Bit(0) |  // CLZERO
                                       Bit(1) |  // IRPERF
                                       Bit(2) |  // XSAVEERPTR (XSAVE family)
                                       Bit(4) |  // RDPRU
                                       Bit(8) |  // MCOMMIT
                                       Bit(9);   // WBNOINVD

// Leaves above 0xD describe post-AVX features (SGX 0x12, PT 0x14, AMX 0x1d/0x1e, AVX10
// 0x24, ...) or topology Ember does not normalise (0x1f): the baseline ends at 0xD.
constexpr std::uint32_t kBaselineMaxBasicLeaf = 0xd;
constexpr std::uint32_t kHypervisorLeavesStart = 0x40000000;

void ApplyBaseline(std::vector<kvm_cpuid_entry2>& entries) {
  std::erase_if(entries, [](const kvm_cpuid_entry2& e) {
    return e.function > kBaselineMaxBasicLeaf && e.function < kHypervisorLeavesStart;
  });
  for (kvm_cpuid_entry2& e : entries) {
    switch (e.function) {
      case 0x0:
        e.eax = std::min(e.eax, kBaselineMaxBasicLeaf);
        break;
      case 0x1:
        e.ecx &= kLeaf1EcxKeep;
        e.edx &= ~kLeaf1EdxDrop;
        break;
      case 0x7:
        if (e.index == 0) {
          e.eax = 0;  // highest subleaf: 0, so AVX-VNNI, AVX512_BF16, ... in 1+ are gone
          e.ebx &= kLeaf7EbxKeep;
          e.ecx &= kLeaf7EcxKeep;
          e.edx &= kLeaf7EdxKeep;
        } else {
          e.eax = e.ebx = e.ecx = e.edx = 0;
        }
        break;
      case 0xd:
        if (e.index == 0) {
          e.eax &= kXcr0X87Sse;
          e.edx = 0;  // XCR0 bits 63:32
          e.ebx = e.ecx = kXsaveLegacySize;
        } else {
          e.eax = e.ebx = e.ecx = e.edx = 0;
        }
        break;
      case 0x80000001:
        e.ecx &= kExt1EcxKeep;
        e.edx &= ~kExt1EdxDrop;
        break;
      case 0x80000008:
        e.ebx &= ~kExt8EbxDrop;
        break;
      default:
        break;
    }
  }
}

// Replaces the entry for (function, index 0), or appends it.
void SetLeaf(std::vector<kvm_cpuid_entry2>& entries, std::uint32_t function, std::uint32_t eax,
             std::uint32_t ebx, std::uint32_t ecx, std::uint32_t edx) {
  kvm_cpuid_entry2 leaf{};
  leaf.function = function;
  leaf.eax = eax;
  leaf.ebx = ebx;
  leaf.ecx = ecx;
  leaf.edx = edx;
  auto it = std::find_if(entries.begin(), entries.end(),
                         [&](const kvm_cpuid_entry2& e) { return e.function == function; });
  if (it != entries.end()) {
    *it = leaf;
  } else {
    entries.push_back(leaf);
  }
}

}  // namespace

absl::StatusOr<CpuTemplate> ParseCpuTemplate(const std::string& name) {
  if (name == "host" || name == "None") return CpuTemplate::kHost;
  if (name == "baseline") return CpuTemplate::kBaseline;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown cpu_template \"", name, "\"; supported: host, baseline (None means host)"));
}

std::string CpuTemplateName(CpuTemplate cpu_template) {
  return cpu_template == CpuTemplate::kBaseline ? "baseline" : "host";
}

void ApplyCpuTemplate(CpuTemplate cpu_template, std::vector<kvm_cpuid_entry2>& entries) {
  if (cpu_template == CpuTemplate::kBaseline) ApplyBaseline(entries);
  SetLeaf(entries, kEmberCpuidBase, kEmberCpuidTemplateLeaf, kEmberCpuidSignatureEbx,
          kEmberCpuidSignatureEcx, kEmberCpuidSignatureEdx);
  SetLeaf(entries, kEmberCpuidTemplateLeaf,
          cpu_template == CpuTemplate::kBaseline ? kCpuidTemplateBaseline : kCpuidTemplateHost, 0,
          0, 0);
}

}  // namespace ember::arch
