#include "snapshot/working_set.h"

#include <algorithm>
#include <cstring>

#include "snapshot/file_codec.h"
#include "vmm/base/atomic_file.h"
#include "vmm/base/status.h"

namespace ember::snapshot {
namespace {

constexpr std::uint32_t kPageSize = 4096;
constexpr std::size_t kHeaderSize = 8 + 4 + 4 + 8 + 8 + 8;
constexpr std::size_t kRunSize = 16;
constexpr FormatHeader kFormat = {kWorkingSetMagic, "working-set file", kHeaderSize,
                                   kWorkingSetVersion};

// The fixed header against the size of the whole file (see HeaderCheck).
absl::Status CheckWorkingSetHeader(const std::string& header, std::uint64_t file_size) {
  EMBER_RETURN_IF_ERROR(CheckHeaderStart(header, file_size, kFormat));
  if (GetLittleEndian<std::uint32_t>(header, 12) != kPageSize) {
    return absl::InvalidArgumentError(
        "page size " + std::to_string(GetLittleEndian<std::uint32_t>(header, 12)) +
        " is not 4096");
  }
  // Runs are disjoint and non-empty, so there are at most as many as memory pages.
  auto memory_pages = GetLittleEndian<std::uint64_t>(header, 16) / kPageSize;
  auto count = GetLittleEndian<std::uint64_t>(header, 32);
  std::uint64_t max_runs = (file_size - kHeaderSize - kCrcSize) / kRunSize;
  if (count > max_runs || count > memory_pages ||
      file_size != kHeaderSize + count * kRunSize + kCrcSize) {
    return absl::InvalidArgumentError("truncated or padded: the header announces " +
                                      std::to_string(count) + " runs, the file holds " +
                                      std::to_string(file_size) + " bytes in all");
  }
  return absl::OkStatus();
}

}  // namespace

std::uint64_t WorkingSet::page_count() const {
  std::uint64_t total = 0;
  for (const PageRun& run : runs) total += run.pages;
  return total;
}

std::vector<PageRun> RunsFromBitmap(const std::vector<std::uint64_t>& bitmap,
                                    std::uint64_t page_count) {
  std::vector<PageRun> runs;
  page_count = std::min<std::uint64_t>(page_count, bitmap.size() * 64);
  for (std::uint64_t page = 0; page < page_count;) {
    std::uint64_t word = bitmap[page / 64] >> (page % 64);
    if (word == 0) {
      page = (page / 64 + 1) * 64;  // the rest of this word is clear
      continue;
    }
    if ((word & 1) == 0) {
      page += static_cast<std::uint64_t>(__builtin_ctzll(word));
      continue;
    }
    std::uint64_t first = page;
    while (page < page_count && ((bitmap[page / 64] >> (page % 64)) & 1) != 0) ++page;
    runs.push_back({first, page - first});
  }
  return runs;
}

std::string EncodeWorkingSet(const WorkingSet& set) {
  std::string out(kWorkingSetMagic, sizeof(kWorkingSetMagic));
  PutLittleEndian<std::uint32_t>(out, kWorkingSetVersion);
  PutLittleEndian<std::uint32_t>(out, kPageSize);
  PutLittleEndian<std::uint64_t>(out, set.memory_size);
  PutLittleEndian<std::uint64_t>(out, set.memory_fingerprint);
  PutLittleEndian<std::uint64_t>(out, set.runs.size());
  for (const PageRun& run : set.runs) {
    PutLittleEndian<std::uint64_t>(out, run.first_page);
    PutLittleEndian<std::uint64_t>(out, run.pages);
  }
  PutLittleEndian<std::uint64_t>(out, Crc64(out, out.size()));
  return out;
}

absl::StatusOr<WorkingSet> DecodeWorkingSet(const std::string& bytes) {
  EMBER_RETURN_IF_ERROR(CheckWorkingSetHeader(bytes, bytes.size()));
  WorkingSet set;
  set.memory_size = GetLittleEndian<std::uint64_t>(bytes, 16);
  set.memory_fingerprint = GetLittleEndian<std::uint64_t>(bytes, 24);
  auto count = GetLittleEndian<std::uint64_t>(bytes, 32);
  std::size_t crc_offset = kHeaderSize + count * kRunSize;
  if (GetLittleEndian<std::uint64_t>(bytes, crc_offset) != Crc64(bytes, crc_offset)) {
    return absl::InvalidArgumentError("CRC mismatch: the file is corrupted");
  }
  std::uint64_t memory_pages = set.memory_size / kPageSize;
  std::uint64_t next_free = 0;
  for (std::uint64_t i = 0; i < count; ++i) {
    PageRun run{GetLittleEndian<std::uint64_t>(bytes, kHeaderSize + i * kRunSize),
                GetLittleEndian<std::uint64_t>(bytes, kHeaderSize + i * kRunSize + 8)};
    if (run.pages == 0 || run.first_page < next_free || run.first_page > memory_pages ||
        run.pages > memory_pages - run.first_page) {
      return absl::InvalidArgumentError("run " + std::to_string(i) +
                                        " is empty, out of order or outside the memory file");
    }
    next_free = run.first_page + run.pages;
    set.runs.push_back(run);
  }
  return set;
}

absl::Status WriteWorkingSetFile(const std::string& path, const WorkingSet& set, int dir_fd) {
  return base::WriteFileAtomically(path, EncodeWorkingSet(set), 0600,
                                   base::AtomicFile::Durability::kDurable, dir_fd);
}

absl::StatusOr<WorkingSet> ReadWorkingSetFile(const std::string& path, std::uint64_t memory_size,
                                              std::uint64_t memory_fingerprint) {
  // A set recorded on another memory file is refused from its header, before its runs are read.
  auto check = [&](const std::string& header, std::uint64_t file_size) -> absl::Status {
    EMBER_RETURN_IF_ERROR(CheckWorkingSetHeader(header, file_size));
    auto set_size = GetLittleEndian<std::uint64_t>(header, 16);
    auto set_fingerprint = GetLittleEndian<std::uint64_t>(header, 24);
    if (set_size != memory_size || set_fingerprint != memory_fingerprint) {
      return absl::InvalidArgumentError(
          "recorded for a different snapshot memory file (" + std::to_string(set_size) +
          " bytes, fingerprint " + std::to_string(set_fingerprint) + "; this one is " +
          std::to_string(memory_size) + " bytes, fingerprint " +
          std::to_string(memory_fingerprint) + ")");
    }
    return absl::OkStatus();
  };
  EMBER_ASSIGN_OR_RETURN(std::string bytes,
                         ReadCheckedFile(path, "working-set file", kHeaderSize, check));
  auto set = DecodeWorkingSet(bytes);
  if (!set.ok()) {
    return absl::InvalidArgumentError("working-set file " + path + ": " +
                                      std::string(set.status().message()));
  }
  return set;
}

}  // namespace ember::snapshot
