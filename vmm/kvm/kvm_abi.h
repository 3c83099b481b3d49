#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace ember::kvm {

// Debian 12's kernel headers declare the variable-length KVM structs (kvm_cpuid2, kvm_msrs,
// ...) with __DECLARE_FLEX_ARRAY, which in C++ adds a member and makes them 12 bytes instead
// of C's 8. That changes both the ioctl numbers (they encode the struct size) and where the
// entries start, so KVM rejects them with EINVAL. We spell out the C layout instead: a
// count, a pad word, then the entries.
struct FlexHeader {
  std::uint32_t count;
  std::uint32_t padding;
};
static_assert(sizeof(FlexHeader) == 8);

inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, FlexHeader);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, FlexHeader);
inline constexpr unsigned long kGetCpuid2 = _IOWR(KVMIO, 0x91, FlexHeader);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, FlexHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, FlexHeader);

// kvm_msr_list is a bare u32 count followed by u32 indices (no pad word).
inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, std::uint32_t);

// kvm_xsave: a 4 KiB legacy+header area, then (KVM_GET_XSAVE2 only) the extended area.
struct XsaveArea {
  std::uint32_t region[1024];
};
static_assert(sizeof(XsaveArea) == 4096);
inline constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, XsaveArea);
inline constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, XsaveArea);
inline constexpr unsigned long kGetXsave2 = _IOR(KVMIO, 0xcf, XsaveArea);

// A FlexHeader followed by room for `capacity` entries of type T, in one buffer to pass to
// an ioctl.
template <typename T>
class FlexBuffer {
 public:
  explicit FlexBuffer(std::size_t capacity) : bytes_(sizeof(FlexHeader) + capacity * sizeof(T)) {
    SetCount(static_cast<std::uint32_t>(capacity));
  }
  explicit FlexBuffer(std::span<const T> entries) : FlexBuffer(entries.size()) {
    std::memcpy(bytes_.data() + sizeof(FlexHeader), entries.data(), entries.size_bytes());
  }

  void* data() { return bytes_.data(); }
  [[nodiscard]] std::uint32_t count() const {
    FlexHeader header;
    std::memcpy(&header, bytes_.data(), sizeof(header));
    return header.count;
  }
  void SetCount(std::uint32_t count) {
    FlexHeader header{count, 0};
    std::memcpy(bytes_.data(), &header, sizeof(header));
  }
  // The first count() entries, copied out.
  [[nodiscard]] std::vector<T> Entries() const {
    std::vector<T> entries(count());
    std::memcpy(entries.data(), bytes_.data() + sizeof(FlexHeader), entries.size() * sizeof(T));
    return entries;
  }

 private:
  std::vector<std::uint8_t> bytes_;
};

}  // namespace ember::kvm
