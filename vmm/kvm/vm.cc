#include "vmm/kvm/vm.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <string>

#include "vmm/base/status.h"

namespace ember::kvm {

absl::Status Vm::SetUserMemoryRegion(std::uint32_t slot, std::uint64_t guest_addr,
                                     std::uint64_t size, void* host, std::uint32_t flags) {
  kvm_userspace_memory_region region{};
  region.slot = slot;
  region.flags = flags;
  region.guest_phys_addr = guest_addr;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<std::uint64_t>(host);  // KVM takes the address as u64
  if (::ioctl(fd_.Get(), KVM_SET_USER_MEMORY_REGION, &region) != 0) {
    return base::ErrnoError("ioctl(KVM_SET_USER_MEMORY_REGION)", "slot " + std::to_string(slot));
  }
  return absl::OkStatus();
}

absl::Status Vm::SetTssAndIdentityMap(std::uint64_t tss_addr, std::uint64_t identity_map_addr) {
  if (::ioctl(fd_.Get(), KVM_SET_TSS_ADDR, tss_addr) != 0) {
    return base::ErrnoError("ioctl(KVM_SET_TSS_ADDR)");
  }
  if (::ioctl(fd_.Get(), KVM_SET_IDENTITY_MAP_ADDR, &identity_map_addr) != 0) {
    return base::ErrnoError("ioctl(KVM_SET_IDENTITY_MAP_ADDR)");
  }
  return absl::OkStatus();
}

absl::Status Vm::CreateIrqchip() {
  if (::ioctl(fd_.Get(), KVM_CREATE_IRQCHIP, 0) != 0) {
    return base::ErrnoError("ioctl(KVM_CREATE_IRQCHIP)");
  }
  return absl::OkStatus();
}

absl::Status Vm::CreatePit() {
  kvm_pit_config config{};
  // The PIT's speaker port (0x61) stays with user space, where we ignore it.
  config.flags = KVM_PIT_SPEAKER_DUMMY;
  if (::ioctl(fd_.Get(), KVM_CREATE_PIT2, &config) != 0) {
    return base::ErrnoError("ioctl(KVM_CREATE_PIT2)");
  }
  return absl::OkStatus();
}

absl::Status Vm::RegisterIrqfd(int eventfd, std::uint32_t gsi) {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<std::uint32_t>(eventfd);
  irqfd.gsi = gsi;
  if (::ioctl(fd_.Get(), KVM_IRQFD, &irqfd) != 0) {
    return base::ErrnoError("ioctl(KVM_IRQFD)", "gsi " + std::to_string(gsi));
  }
  return absl::OkStatus();
}

absl::Status Vm::RegisterIoeventfd(int eventfd, std::uint64_t addr, std::uint32_t length, bool pio,
                                   std::optional<std::uint64_t> datamatch) {
  kvm_ioeventfd ioeventfd{};
  ioeventfd.addr = addr;
  ioeventfd.len = length;
  ioeventfd.fd = eventfd;
  if (pio) ioeventfd.flags |= KVM_IOEVENTFD_FLAG_PIO;
  if (datamatch) {
    ioeventfd.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    ioeventfd.datamatch = *datamatch;
  }
  if (::ioctl(fd_.Get(), KVM_IOEVENTFD, &ioeventfd) != 0) {
    return base::ErrnoError("ioctl(KVM_IOEVENTFD)", "address " + std::to_string(addr));
  }
  return absl::OkStatus();
}

namespace {

absl::Status VmIoctl(int fd, unsigned long request, void* arg, const char* name) {
  if (::ioctl(fd, request, arg) != 0) return base::ErrnoError(std::string("ioctl(") + name + ")");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<kvm_irqchip> Vm::GetIrqchip(std::uint32_t chip) const {
  kvm_irqchip state{};
  state.chip_id = chip;
  EMBER_RETURN_IF_ERROR(VmIoctl(fd_.Get(), KVM_GET_IRQCHIP, &state, "KVM_GET_IRQCHIP"));
  return state;
}

absl::Status Vm::SetIrqchip(const kvm_irqchip& chip) const {
  return VmIoctl(fd_.Get(), KVM_SET_IRQCHIP, const_cast<kvm_irqchip*>(&chip), "KVM_SET_IRQCHIP");
}

absl::StatusOr<kvm_pit_state2> Vm::GetPit() const {
  kvm_pit_state2 pit{};
  EMBER_RETURN_IF_ERROR(VmIoctl(fd_.Get(), KVM_GET_PIT2, &pit, "KVM_GET_PIT2"));
  return pit;
}

absl::Status Vm::SetPit(const kvm_pit_state2& pit) const {
  return VmIoctl(fd_.Get(), KVM_SET_PIT2, const_cast<kvm_pit_state2*>(&pit), "KVM_SET_PIT2");
}

absl::StatusOr<kvm_clock_data> Vm::GetClock() const {
  kvm_clock_data clock{};
  EMBER_RETURN_IF_ERROR(VmIoctl(fd_.Get(), KVM_GET_CLOCK, &clock, "KVM_GET_CLOCK"));
  return clock;
}

absl::Status Vm::SetClock(const kvm_clock_data& clock) const {
  kvm_clock_data copy = clock;
  copy.flags = 0;  // only the clock value is restored; KVM rejects flags it set itself
  return VmIoctl(fd_.Get(), KVM_SET_CLOCK, &copy, "KVM_SET_CLOCK");
}

absl::Status Vm::TakeDirtyLog(std::uint32_t slot, std::span<std::uint64_t> bitmap) const {
  std::vector<std::uint64_t> log(bitmap.size());
  kvm_dirty_log request{};
  request.slot = slot;
  request.dirty_bitmap = log.data();
  EMBER_RETURN_IF_ERROR(VmIoctl(fd_.Get(), KVM_GET_DIRTY_LOG, &request, "KVM_GET_DIRTY_LOG"));
  for (std::size_t i = 0; i < bitmap.size(); ++i) bitmap[i] |= log[i];
  return absl::OkStatus();
}

absl::StatusOr<Vcpu> Vm::CreateVcpu(std::uint32_t id) const {
  base::UniqueFd vcpu_fd(::ioctl(fd_.Get(), KVM_CREATE_VCPU, id));
  if (!vcpu_fd) return base::ErrnoError("ioctl(KVM_CREATE_VCPU)", "vcpu " + std::to_string(id));
  EMBER_ASSIGN_OR_RETURN(
      base::MmapRegion run,
      base::MmapRegion::Map(static_cast<std::size_t>(vcpu_mmap_size_), PROT_READ | PROT_WRITE,
                            MAP_SHARED, vcpu_fd.Get()));
  return Vcpu(id, std::move(vcpu_fd), std::move(run));
}

}  // namespace ember::kvm
