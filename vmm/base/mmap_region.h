#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include "absl/status/statusor.h"

namespace ember::base {

// Sole owner of one mmap()ed range; unmaps it on destruction. Move-only.
class MmapRegion {
 public:
  // Maps `size` bytes of `fd` at `offset` (fd < 0: anonymous memory).
  [[nodiscard]] static absl::StatusOr<MmapRegion> Map(std::size_t size, int prot, int flags,
                                                      int fd = -1, off_t offset = 0);

  MmapRegion() = default;
  MmapRegion(MmapRegion&& other) noexcept
      : addr_(std::exchange(other.addr_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  MmapRegion& operator=(MmapRegion&& other) noexcept;
  MmapRegion(const MmapRegion&) = delete;
  MmapRegion& operator=(const MmapRegion&) = delete;
  ~MmapRegion() { Reset(); }

  [[nodiscard]] std::uint8_t* data() const { return static_cast<std::uint8_t*>(addr_); }
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] std::span<std::uint8_t> bytes() const { return {data(), size_}; }

 private:
  MmapRegion(void* addr, std::size_t size) : addr_(addr), size_(size) {}
  void Reset();

  void* addr_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ember::base
