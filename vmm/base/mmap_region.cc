#include "vmm/base/mmap_region.h"

#include <sys/mman.h>

#include "vmm/base/status.h"

namespace ember::base {

absl::StatusOr<MmapRegion> MmapRegion::Map(std::size_t size, int prot, int flags, int fd,
                                           off_t offset) {
  if (fd < 0) flags |= MAP_ANONYMOUS;
  void* addr = ::mmap(nullptr, size, prot, flags, fd, offset);
  if (addr == MAP_FAILED) return ErrnoError("mmap");
  return MmapRegion(addr, size);
}

MmapRegion& MmapRegion::operator=(MmapRegion&& other) noexcept {
  if (this != &other) {
    Reset();
    addr_ = std::exchange(other.addr_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void MmapRegion::Reset() {
  if (addr_ != nullptr) ::munmap(addr_, size_);
  addr_ = nullptr;
  size_ = 0;
}

}  // namespace ember::base
