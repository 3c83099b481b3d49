#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/base/mmap_region.h"
#include "vmm/base/unique_fd.h"

namespace ember::base {

using GuestAddress = std::uint64_t;

// One contiguous range of guest-physical RAM and where it lives in the VMM and in the
// backing file. Regions are laid out back to back in the file, in address order.
struct GuestRegion {
  GuestAddress guest_start = 0;
  std::uint64_t size = 0;
  std::uint8_t* host = nullptr;
  std::uint64_t file_offset = 0;

  [[nodiscard]] GuestAddress guest_end() const { return guest_start + size; }
};

// Guest RAM: a memfd (so snapshots can write it out and clones can share it) mapped once
// into the VMM. Lives as long as the VM; every device borrows it. Every access from VMM
// code goes through the bounds-checked accessors below, which fail rather than touch
// anything outside guest RAM, so a guest-supplied address can never reach VMM memory.
class GuestMemory {
 public:
  struct Range {
    GuestAddress start;
    std::uint64_t size;
  };

  // Fresh zeroed memory for `ranges` (page-aligned, ascending, non-overlapping).
  [[nodiscard]] static absl::StatusOr<GuestMemory> Create(const std::vector<Range>& ranges);

  // Memory restored from a snapshot's memory file, laid out like Create()'s backing file
  // (regions back to back). The file is mapped MAP_PRIVATE: pages load on first touch, the
  // guest's writes stay private to this VM, and any number of VMs can share one file.
  [[nodiscard]] static absl::StatusOr<GuestMemory> MapFile(const std::string& path,
                                                           const std::vector<Range>& ranges);
  // The same for a file its caller opened and checked: maps its first bytes, as many as
  // `ranges` need, and keeps `file`. The file may hold more after them (a snapshot memory
  // file's trailer). `name` is for messages.
  [[nodiscard]] static absl::StatusOr<GuestMemory> MapFile(UniqueFd file, const std::string& name,
                                                           const std::vector<Range>& ranges);

  // Empty anonymous private memory for a userfaultfd restore (snapshot::UffdPageServer
  // registers it and fills each page on first touch), laid out like MapFile's. No backing fd.
  [[nodiscard]] static absl::StatusOr<GuestMemory> CreateAnonymous(
      const std::vector<Range>& ranges);

  [[nodiscard]] const std::vector<GuestRegion>& regions() const { return regions_; }
  [[nodiscard]] std::uint64_t total_size() const { return mapping_.size(); }
  // The backing memfd or file; borrowed.
  [[nodiscard]] int fd() const { return fd_.Get(); }
  // True when the backing fd holds exactly what the guest sees (a memfd), so its holes are
  // untouched pages. False for a private file mapping, whose changes live only in memory.
  [[nodiscard]] bool fd_is_current() const { return fd_is_current_; }
  // One past the highest guest-physical RAM address.
  [[nodiscard]] GuestAddress end() const { return regions_.back().guest_end(); }

  // Diff snapshots: from now on, remember every page the VMM hands out for access (Slice,
  // Write) — device writes that KVM's dirty log cannot see. Reads through Read/ReadObj do
  // not count; a Slice may be written, so it does. Call before any device runs.
  void EnableDirtyTracking();
  [[nodiscard]] bool dirty_tracking() const { return dirty_ != nullptr; }
  // OR-s the pages marked since the last call into `bitmap` (one bit per 4 KiB page of the
  // memory's backing file, bit i of word i/64 for page i) and clears them. Any thread.
  void TakeDirtyPages(std::span<std::uint64_t> bitmap) const;
  [[nodiscard]] std::uint64_t page_count() const { return total_size() / 4096; }

  // True when [addr, addr+len) is wholly inside one region (no overflow, len may be 0).
  [[nodiscard]] bool Contains(GuestAddress addr, std::uint64_t len) const {
    return FindRange(addr, len) != nullptr;
  }

  // The host bytes of [addr, addr+len), which must lie within one region. Inline: device data
  // paths call it for every descriptor.
  [[nodiscard]] absl::StatusOr<std::span<std::uint8_t>> Slice(GuestAddress addr,
                                                              std::uint64_t len) const {
    std::uint8_t* host = HostAddress(addr, len);
    if (host == nullptr) [[unlikely]] return OutsideError(addr, len);
    return std::span<std::uint8_t>(host, len);
  }
  // Slice for hot paths that report a fault their own way: the host address of `addr`, or
  // nullptr when [addr, addr+len) is not wholly inside one region. No Status is built.
  [[nodiscard]] std::uint8_t* HostAddress(GuestAddress addr, std::uint64_t len) const {
    const GuestRegion* region = FindRange(addr, len);
    if (region == nullptr) [[unlikely]] return nullptr;
    if (dirty_ != nullptr) [[unlikely]] MarkDirty(*region, addr, len);
    return region->host + (addr - region->guest_start);
  }

  [[nodiscard]] absl::Status Write(GuestAddress addr, std::span<const std::uint8_t> data) const {
    std::uint8_t* dst = HostAddress(addr, data.size());
    if (dst == nullptr) [[unlikely]] return OutsideError(addr, data.size());
    if (!data.empty()) std::memcpy(dst, data.data(), data.size());
    return absl::OkStatus();
  }

  [[nodiscard]] absl::Status Read(GuestAddress addr, std::span<std::uint8_t> out) const {
    const GuestRegion* region = FindRange(addr, out.size());
    if (region == nullptr) [[unlikely]] return OutsideError(addr, out.size());
    if (!out.empty()) {
      std::memcpy(out.data(), region->host + (addr - region->guest_start), out.size());
    }
    return absl::OkStatus();
  }

  template <typename T>
  [[nodiscard]] absl::StatusOr<T> ReadObj(GuestAddress addr) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T value{};  // zeroed: GCC cannot see that Read fills it whenever it returns OK
    auto status = Read(addr, std::span(reinterpret_cast<std::uint8_t*>(&value), sizeof(T)));
    if (!status.ok()) return status;
    return value;
  }

  template <typename T>
  [[nodiscard]] absl::Status WriteObj(GuestAddress addr, const T& value) const {
    static_assert(std::is_trivially_copyable_v<T>);
    return Write(addr, std::span(reinterpret_cast<const std::uint8_t*>(&value), sizeof(T)));
  }

 private:
  GuestMemory(UniqueFd fd, MmapRegion mapping, std::vector<GuestRegion> regions,
              bool fd_is_current)
      : fd_(std::move(fd)),
        mapping_(std::move(mapping)),
        regions_(std::move(regions)),
        fd_is_current_(fd_is_current) {}
  [[nodiscard]] static absl::StatusOr<std::uint64_t> CheckRanges(const std::vector<Range>& ranges);
  // The region wholly holding [addr, addr+len), or nullptr (which includes overflow).
  [[nodiscard]] const GuestRegion* FindRange(GuestAddress addr, std::uint64_t len) const {
    for (const GuestRegion& region : regions_) {
      if (addr >= region.guest_start && addr < region.guest_end()) {
        // addr is inside the region, so guest_end() - addr cannot underflow.
        return len <= region.guest_end() - addr ? &region : nullptr;
      }
    }
    return nullptr;
  }
  [[nodiscard]] static absl::Status OutsideError(GuestAddress addr, std::uint64_t len);
  void MarkDirty(const GuestRegion& region, GuestAddress addr, std::uint64_t len) const;

  UniqueFd fd_;
  MmapRegion mapping_;
  std::vector<GuestRegion> regions_;
  bool fd_is_current_ = true;
  // One bit per page of the backing file, set by MarkDirty; null until tracking is enabled.
  std::unique_ptr<std::atomic<std::uint64_t>[]> dirty_;
};

}  // namespace ember::base
