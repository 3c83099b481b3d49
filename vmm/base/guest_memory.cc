#include "vmm/base/guest_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/str_format.h"
#include "vmm/base/status.h"

namespace ember::base {
namespace {

constexpr std::uint64_t kPageSize = 4096;

}  // namespace

absl::StatusOr<std::uint64_t> GuestMemory::CheckRanges(const std::vector<Range>& ranges) {
  if (ranges.empty()) return absl::InvalidArgumentError("guest memory needs at least one range");
  std::uint64_t total = 0;
  GuestAddress previous_end = 0;
  for (const Range& r : ranges) {
    if (r.size == 0 || r.start % kPageSize != 0 || r.size % kPageSize != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("guest memory range 0x%x+0x%x is empty or not page aligned", r.start,
                          r.size));
    }
    if (r.start < previous_end || r.start + r.size < r.start) {
      return absl::InvalidArgumentError(
          absl::StrFormat("guest memory range 0x%x+0x%x overlaps or wraps", r.start, r.size));
    }
    previous_end = r.start + r.size;
    total += r.size;
  }
  return total;
}

namespace {

std::vector<GuestRegion> LayOut(const std::vector<GuestMemory::Range>& ranges, std::uint8_t* base) {
  std::vector<GuestRegion> regions;
  std::uint64_t offset = 0;
  for (const GuestMemory::Range& r : ranges) {
    regions.push_back({r.start, r.size, base + offset, offset});
    offset += r.size;
  }
  return regions;
}

}  // namespace

absl::StatusOr<GuestMemory> GuestMemory::Create(const std::vector<Range>& ranges) {
  EMBER_ASSIGN_OR_RETURN(std::uint64_t total, CheckRanges(ranges));
  UniqueFd fd(::memfd_create("ember-guest-mem", MFD_CLOEXEC));
  if (!fd) return ErrnoError("memfd_create", "guest memory");
  if (::ftruncate(fd.Get(), static_cast<off_t>(total)) != 0) {
    return ErrnoError("ftruncate", absl::StrFormat("guest memory to %u bytes", total));
  }
  // MAP_NORESERVE: a 64 GiB guest costs only the pages it touches.
  EMBER_ASSIGN_OR_RETURN(MmapRegion mapping,
                         MmapRegion::Map(total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                                         fd.Get()));
  std::vector<GuestRegion> regions = LayOut(ranges, mapping.data());
  return GuestMemory(std::move(fd), std::move(mapping), std::move(regions), true);
}

absl::StatusOr<GuestMemory> GuestMemory::MapFile(const std::string& path,
                                                 const std::vector<Range>& ranges) {
  EMBER_ASSIGN_OR_RETURN(std::uint64_t total, CheckRanges(ranges));
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoError("open", path);
  struct stat st {};
  if (::fstat(fd.Get(), &st) != 0) return ErrnoError("fstat", path);
  if (static_cast<std::uint64_t>(st.st_size) != total) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "memory file %s is %d bytes; the layout needs %u", path, st.st_size, total));
  }
  return MapFile(std::move(fd), path, ranges);
}

absl::StatusOr<GuestMemory> GuestMemory::MapFile(UniqueFd fd, const std::string& name,
                                                 const std::vector<Range>& ranges) {
  EMBER_ASSIGN_OR_RETURN(std::uint64_t total, CheckRanges(ranges));
  struct stat st {};
  if (::fstat(fd.Get(), &st) != 0) return ErrnoError("fstat", name);
  if (static_cast<std::uint64_t>(st.st_size) < total) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "memory file %s is %d bytes; the layout needs %u", name, st.st_size, total));
  }
  EMBER_ASSIGN_OR_RETURN(MmapRegion mapping,
                         MmapRegion::Map(total, PROT_READ | PROT_WRITE,
                                         MAP_PRIVATE | MAP_NORESERVE, fd.Get()));
  std::vector<GuestRegion> regions = LayOut(ranges, mapping.data());
  return GuestMemory(std::move(fd), std::move(mapping), std::move(regions), false);
}

absl::StatusOr<GuestMemory> GuestMemory::CreateAnonymous(const std::vector<Range>& ranges) {
  EMBER_ASSIGN_OR_RETURN(std::uint64_t total, CheckRanges(ranges));
  EMBER_ASSIGN_OR_RETURN(MmapRegion mapping,
                         MmapRegion::Map(total, PROT_READ | PROT_WRITE,
                                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE));
  std::vector<GuestRegion> regions = LayOut(ranges, mapping.data());
  return GuestMemory(UniqueFd(), std::move(mapping), std::move(regions), false);
}

absl::Status GuestMemory::OutsideError(GuestAddress addr, std::uint64_t len) {
  return absl::OutOfRangeError(
      absl::StrFormat("guest range 0x%x+0x%x is outside guest memory", addr, len));
}

void GuestMemory::EnableDirtyTracking() {
  std::uint64_t words = (page_count() + 63) / 64;
  dirty_ = std::make_unique<std::atomic<std::uint64_t>[]>(words);
  for (std::uint64_t i = 0; i < words; ++i) dirty_[i].store(0);
}

void GuestMemory::MarkDirty(const GuestRegion& region, GuestAddress addr,
                            std::uint64_t len) const {
  if (dirty_ == nullptr || len == 0) return;
  std::uint64_t first = (region.file_offset + (addr - region.guest_start)) / kPageSize;
  std::uint64_t last = (region.file_offset + (addr - region.guest_start) + len - 1) / kPageSize;
  for (std::uint64_t page = first; page <= last; ++page) {
    dirty_[page / 64].fetch_or(std::uint64_t{1} << (page % 64), std::memory_order_relaxed);
  }
}

void GuestMemory::TakeDirtyPages(std::span<std::uint64_t> bitmap) const {
  if (dirty_ == nullptr) return;
  std::uint64_t words = std::min<std::uint64_t>(bitmap.size(), (page_count() + 63) / 64);
  for (std::uint64_t i = 0; i < words; ++i) bitmap[i] |= dirty_[i].exchange(0);
}

}  // namespace ember::base
