#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

// CPU templates: what the machine config's `cpu_template` does to each vCPU's CPUID table.
namespace ember::arch {

enum class CpuTemplate {
  // KVM's supported features as they are on this host: fastest, not portable.
  kHost,
  // A portable x86-64 feature set for snapshots that must restore on other hosts: the
  // pre-AVX instruction set (SSE up to SSE4.2, POPCNT, AES-NI, PCLMULQDQ) without the
  // XSAVE family or CMPXCHG16B, plus the speculation-control interfaces every patched host
  // has. cpu_template.cc lists each bit and why.
  kBaseline,
};

// The value of `machine-config.cpu_template`: "host", "baseline", or Firecracker's "None"
// (= host). Anything else is a user error naming the supported values.
[[nodiscard]] absl::StatusOr<CpuTemplate> ParseCpuTemplate(const std::string& name);
[[nodiscard]] std::string CpuTemplateName(CpuTemplate cpu_template);

// Ember's own hypervisor CPUID leaves, next to KVM's (which stay at 0x4000_0000 because
// Linux finds kvmclock and PV features there). The guest finds ours the way it finds any
// hypervisor's, by scanning 0x4000_0000 + n * 0x100 for the signature:
//   0x4000_0100  EAX = 0x4000_0101 (highest Ember leaf); EBX, ECX, EDX = "EmberVMM\0\0\0\0"
//   0x4000_0101  EAX = the template (kCpuidTemplate*), EBX = ECX = EDX = 0 (reserved)
// On the development machines KVM hands the guest the host's standard leaves whatever the
// table says but takes the hypervisor leaves from it, so this is where a guest (the test
// guest) can tell which template its VMM applied.
constexpr std::uint32_t kEmberCpuidBase = 0x40000100;
constexpr std::uint32_t kEmberCpuidTemplateLeaf = 0x40000101;
constexpr std::uint32_t kEmberCpuidSignatureEbx = 0x65626d45;  // "Embe"
constexpr std::uint32_t kEmberCpuidSignatureEcx = 0x4d4d5672;  // "rVMM"
constexpr std::uint32_t kEmberCpuidSignatureEdx = 0;
// Values of 0x4000_0101 EAX: part of the guest-visible interface, never renumbered.
constexpr std::uint32_t kCpuidTemplateHost = 0;
constexpr std::uint32_t kCpuidTemplateBaseline = 1;

// Applies `cpu_template` to one vCPU's table, after NormalizeCpuid and before
// KVM_SET_CPUID2, and adds the Ember leaves that name it. kHost changes no existing leaf.
// Pure function of its inputs; the builder calls it once per vCPU.
void ApplyCpuTemplate(CpuTemplate cpu_template, std::vector<kvm_cpuid_entry2>& entries);

}  // namespace ember::arch
