#pragma once

#include <linux/kvm.h>

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"
#include "vmm/kvm/vm.h"

namespace ember::kvm {

// The /dev/kvm system handle. Opening it checks the API version and every capability the
// VMM relies on, so a host that lacks one fails at start-up with a message naming it
// rather than later with an obscure ioctl error.
class Kvm {
 public:
  [[nodiscard]] static absl::StatusOr<Kvm> Open(const char* path = "/dev/kvm");

  [[nodiscard]] absl::StatusOr<Vm> CreateVm() const;
  // CPUID leaves this host's KVM can expose to a guest. Asked of KVM once (its answer does not
  // change; a pooled VMM asks before its launch, vmm/pool_slot.h), then a copy of that answer.
  // VMM thread.
  [[nodiscard]] absl::StatusOr<std::vector<kvm_cpuid_entry2>> GetSupportedCpuid() const;
  // Size of each vCPU's shared kvm_run area.
  [[nodiscard]] int vcpu_mmap_size() const { return vcpu_mmap_size_; }
  [[nodiscard]] int CheckExtension(int capability) const;
  // MSRs a snapshot must save: KVM's list of MSRs it virtualises.
  [[nodiscard]] absl::StatusOr<std::vector<std::uint32_t>> GetMsrIndexList() const;
  // Size of a vCPU's XSAVE image: KVM_CAP_XSAVE2's answer, at least 4096.
  [[nodiscard]] std::size_t XsaveSize() const;

 private:
  Kvm(base::UniqueFd fd, int vcpu_mmap_size) : fd_(std::move(fd)), vcpu_mmap_size_(vcpu_mmap_size) {}
  base::UniqueFd fd_;
  int vcpu_mmap_size_;
  mutable std::optional<std::vector<kvm_cpuid_entry2>> supported_cpuid_;  // once asked
};

}  // namespace ember::kvm
