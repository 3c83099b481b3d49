#include "vmm/emberd/functions/working_set.h"

#include <cstring>

#include "vmm/base/status.h"
#include "vmm/emberd/launcher.h"
#include "vmm/emberd/store.h"
#include "vmm/emberd/vmm_file.h"

namespace ember::emberd::functions {
namespace {

// snapshot/working_set.h's layout: magic (8), version u32, page size u32, memory size u64,
// fingerprint u64, run count u64, runs (first page u64, pages u64)..., CRC-64 (8); little-endian.
constexpr char kMagic[8] = {'E', 'M', 'B', 'E', 'R', 'W', 'S', '1'};
constexpr std::uint32_t kVersion = 1;
constexpr std::uint64_t kPage = 4096;
constexpr std::size_t kHeaderBytes = 40;
constexpr std::size_t kRunBytes = 16;
constexpr std::size_t kCrcBytes = 8;

template <typename T>
T LittleEndianAt(const std::string& bytes, std::size_t offset) {
  T value = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    value |= static_cast<T>(static_cast<unsigned char>(bytes[offset + i])) << (8 * i);
  }
  return value;
}

}  // namespace

absl::Status CheckWorkingSet(const std::string& bytes, std::uint64_t memory_bytes) {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError("the recorded working set " + what);
  };
  if (bytes.size() > MaxWorkingSetBytes(memory_bytes)) return bad("is too large");
  if (bytes.size() < kHeaderBytes + kCrcBytes ||
      (bytes.size() - kHeaderBytes - kCrcBytes) % kRunBytes != 0) {
    return bad("has a size no working set has");
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) return bad("has no magic");
  if (LittleEndianAt<std::uint32_t>(bytes, 8) != kVersion) return bad("is of another version");
  if (LittleEndianAt<std::uint32_t>(bytes, 12) != kPage) return bad("has another page size");
  if (LittleEndianAt<std::uint64_t>(bytes, 16) != memory_bytes) {
    return bad("was recorded for another memory size");
  }
  const std::uint64_t runs = LittleEndianAt<std::uint64_t>(bytes, 32);
  if (runs != (bytes.size() - kHeaderBytes - kCrcBytes) / kRunBytes) {
    return bad("names another number of runs than it holds");
  }
  std::uint64_t next_free = 0;  // the first page a run may start at
  for (std::uint64_t i = 0; i < runs; ++i) {
    const std::size_t at = kHeaderBytes + static_cast<std::size_t>(i) * kRunBytes;
    const std::uint64_t first = LittleEndianAt<std::uint64_t>(bytes, at);
    const std::uint64_t pages = LittleEndianAt<std::uint64_t>(bytes, at + 8);
    if (pages == 0 || first < next_free || first > memory_bytes / kPage ||
        pages > memory_bytes / kPage - first) {
      return bad("has run " + std::to_string(i) + " out of order or outside the memory");
    }
    next_free = first + pages + 1;  // runs are maximal: at least one page apart
  }
  return absl::OkStatus();
}

absl::Status TakeRecordedWorkingSet(const std::string& jail_output_dir, std::uint64_t memory_bytes,
                                    const std::string& to) {
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd file,
                         OpenVmmFile(jail_output_dir, kJailWorkingSetFile, /*in_root=*/true));
  const std::uint64_t limit = MaxWorkingSetBytes(memory_bytes);
  EMBER_ASSIGN_OR_RETURN(std::string bytes,
                         ReadAtMost(file.Get(), static_cast<std::size_t>(limit) + 1));
  EMBER_RETURN_IF_ERROR(CheckWorkingSet(bytes, memory_bytes));
  return WriteFileAtomic(to, bytes, 0600);
}

}  // namespace ember::emberd::functions
