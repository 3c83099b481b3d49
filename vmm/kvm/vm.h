#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"
#include "vmm/kvm/vcpu.h"

namespace ember::kvm {

// One KVM virtual machine. Owned by the VMM's builder and then by the Vmm; the ioctls
// here are called from the VMM thread during set-up (vCPUs only use their own fds).
class Vm {
 public:
  // Maps guest-physical [guest_addr, guest_addr+size) to host memory at `host` (borrowed:
  // the mapping must outlive the VM).
  [[nodiscard]] absl::Status SetUserMemoryRegion(std::uint32_t slot, std::uint64_t guest_addr,
                                                 std::uint64_t size, void* host,
                                                 std::uint32_t flags = 0);
  // x86 needs three pages for the TSS and one for the EPT identity map somewhere the guest
  // never uses: we put them just below the 4 GiB boundary, inside the MMIO gap.
  [[nodiscard]] absl::Status SetTssAndIdentityMap(std::uint64_t tss_addr,
                                                  std::uint64_t identity_map_addr);
  // The in-kernel PIC + IOAPIC + LAPICs and the in-kernel PIT.
  [[nodiscard]] absl::Status CreateIrqchip();
  [[nodiscard]] absl::Status CreatePit();
  // Raises interrupt line `gsi` whenever `eventfd` (borrowed) is signalled.
  [[nodiscard]] absl::Status RegisterIrqfd(int eventfd, std::uint32_t gsi);
  // Signals `eventfd` (borrowed) on a guest write of `length` bytes to `addr`, without a
  // vCPU exit to user space. `datamatch` restricts it to writes of that value.
  [[nodiscard]] absl::Status RegisterIoeventfd(int eventfd, std::uint64_t addr,
                                               std::uint32_t length, bool pio,
                                               std::optional<std::uint64_t> datamatch);
  [[nodiscard]] absl::StatusOr<Vcpu> CreateVcpu(std::uint32_t id) const;

  // VM-wide device state, for snapshots: the PICs (chip 0, 1) and IOAPIC (chip 2), the PIT,
  // and kvmclock. Only while every vCPU is paused.
  [[nodiscard]] absl::StatusOr<kvm_irqchip> GetIrqchip(std::uint32_t chip) const;
  [[nodiscard]] absl::Status SetIrqchip(const kvm_irqchip& chip) const;
  [[nodiscard]] absl::StatusOr<kvm_pit_state2> GetPit() const;
  [[nodiscard]] absl::Status SetPit(const kvm_pit_state2& pit) const;
  [[nodiscard]] absl::StatusOr<kvm_clock_data> GetClock() const;
  // ORs the pages the guest wrote in memslot `slot` since the last call into `bitmap` (one
  // bit per page of the slot) and resets the log. The slot needs KVM_MEM_LOG_DIRTY_PAGES.
  [[nodiscard]] absl::Status TakeDirtyLog(std::uint32_t slot, std::span<std::uint64_t> bitmap) const;
  [[nodiscard]] absl::Status SetClock(const kvm_clock_data& clock) const;

  // Borrowed by snapshot code for VM-wide state ioctls.
  [[nodiscard]] int fd() const { return fd_.Get(); }

 private:
  friend class Kvm;
  Vm(base::UniqueFd fd, int vcpu_mmap_size) : fd_(std::move(fd)), vcpu_mmap_size_(vcpu_mmap_size) {}
  base::UniqueFd fd_;
  int vcpu_mmap_size_;
};

}  // namespace ember::kvm
