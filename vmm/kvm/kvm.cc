#include "vmm/kvm/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <string>

#include "vmm/base/status.h"
#include "vmm/kvm/kvm_abi.h"

namespace ember::kvm {
namespace {

struct RequiredCapability {
  int id;
  const char* name;
};

// What the VMM uses unconditionally; each is present on every KVM since Linux 4.14.
constexpr RequiredCapability kRequiredCapabilities[] = {
    {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
    {KVM_CAP_HLT, "KVM_CAP_HLT"},
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
    {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
    {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
    {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
    {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE"},
    {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
};

// Upper bound on CPUID entries; KVM reports E2BIG when the buffer is too small.
constexpr std::size_t kMaxCpuidEntries = 256;

}  // namespace

absl::StatusOr<Kvm> Kvm::Open(const char* path) {
  base::UniqueFd fd(::open(path, O_RDWR | O_CLOEXEC));
  if (!fd) return base::ErrnoError("open", path);
  int version = ::ioctl(fd.Get(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    return absl::FailedPreconditionError("KVM API version " + std::to_string(version) +
                                         " is not the supported version " +
                                         std::to_string(KVM_API_VERSION));
  }
  for (const RequiredCapability& cap : kRequiredCapabilities) {
    if (::ioctl(fd.Get(), KVM_CHECK_EXTENSION, cap.id) <= 0) {
      return absl::FailedPreconditionError(std::string("this host's KVM lacks ") + cap.name +
                                           ", which Ember requires");
    }
  }
  int mmap_size = ::ioctl(fd.Get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (mmap_size <= 0) return base::ErrnoError("ioctl(KVM_GET_VCPU_MMAP_SIZE)", path);
  return Kvm(std::move(fd), mmap_size);
}

absl::StatusOr<std::vector<std::uint32_t>> Kvm::GetMsrIndexList() const {
  // First ask for the count (E2BIG fills it in), then for the list.
  std::uint32_t count = 0;
  if (::ioctl(fd_.Get(), kGetMsrIndexList, &count) != 0 && errno != E2BIG) {
    return base::ErrnoError("ioctl(KVM_GET_MSR_INDEX_LIST)");
  }
  std::vector<std::uint32_t> list(count + 1);
  list[0] = count;
  if (::ioctl(fd_.Get(), kGetMsrIndexList, list.data()) != 0) {
    return base::ErrnoError("ioctl(KVM_GET_MSR_INDEX_LIST)");
  }
  return std::vector<std::uint32_t>(list.begin() + 1, list.begin() + 1 + list[0]);
}

std::size_t Kvm::XsaveSize() const {
  int size = CheckExtension(KVM_CAP_XSAVE2);
  return size > 4096 ? static_cast<std::size_t>(size) : 4096;
}

int Kvm::CheckExtension(int capability) const {
  return ::ioctl(fd_.Get(), KVM_CHECK_EXTENSION, capability);
}

absl::StatusOr<Vm> Kvm::CreateVm() const {
  int vm_fd;
  do {
    vm_fd = ::ioctl(fd_.Get(), KVM_CREATE_VM, 0);
  } while (vm_fd < 0 && errno == EINTR);
  if (vm_fd < 0) return base::ErrnoError("ioctl(KVM_CREATE_VM)");
  return Vm(base::UniqueFd(vm_fd), vcpu_mmap_size_);
}

absl::StatusOr<std::vector<kvm_cpuid_entry2>> Kvm::GetSupportedCpuid() const {
  if (supported_cpuid_) return *supported_cpuid_;
  FlexBuffer<kvm_cpuid_entry2> cpuid(kMaxCpuidEntries);
  if (::ioctl(fd_.Get(), kGetSupportedCpuid, cpuid.data()) != 0) {
    return base::ErrnoError("ioctl(KVM_GET_SUPPORTED_CPUID)");
  }
  supported_cpuid_ = cpuid.Entries();
  return *supported_cpuid_;
}

}  // namespace ember::kvm
