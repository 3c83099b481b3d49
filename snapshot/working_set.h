#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::snapshot {

// A recorded working set (the REAP idea): the pages of a snapshot's memory file that a restored
// guest touched, as ascending, non-overlapping runs of 4 KiB pages. The first userfaultfd
// restore records it; later restores load those runs in bulk before the vCPUs start.
struct PageRun {
  std::uint64_t first_page = 0;  // page index in the memory file (offset / 4096)
  std::uint64_t pages = 0;

  bool operator==(const PageRun&) const = default;
};

struct WorkingSet {
  // What the set was recorded against (see MemoryFileIdentity): a set is only loaded onto the
  // memory file it came from.
  std::uint64_t memory_size = 0;
  std::uint64_t memory_fingerprint = 0;
  std::vector<PageRun> runs;

  [[nodiscard]] std::uint64_t page_count() const;
};

// The working-set file's layout, integers little-endian:
//   magic "EMBERWS1" (8) | format version u32 | page size u32 | memory size u64 |
//   memory fingerprint u64 | run count u64 | runs (first page u64, pages u64)... |
//   CRC-64/XZ of everything before it (8)
inline constexpr char kWorkingSetMagic[8] = {'E', 'M', 'B', 'E', 'R', 'W', 'S', '1'};
inline constexpr std::uint32_t kWorkingSetVersion = 1;

// The runs of set bits in `bitmap` (bit i of word i/64 is page i), at most `page_count` pages.
[[nodiscard]] std::vector<PageRun> RunsFromBitmap(const std::vector<std::uint64_t>& bitmap,
                                                  std::uint64_t page_count);

// Encoding and decoding, for files and tests. DecodeWorkingSet checks the file's own integrity
// (magic, version, CRC, runs in order and inside memory_size); InvalidArgument says which.
[[nodiscard]] std::string EncodeWorkingSet(const WorkingSet& set);
[[nodiscard]] absl::StatusOr<WorkingSet> DecodeWorkingSet(const std::string& bytes);

// Writes `set` atomically through base::WriteFileAtomically (a temporary file of its own, so
// clones ending together never mix their sets; the VMM thread's seccomp allowlist permits it).
// `dir_fd` as base::AtomicFile::Create's.
[[nodiscard]] absl::Status WriteWorkingSetFile(const std::string& path, const WorkingSet& set,
                                               int dir_fd = -1);

// Reads and verifies the file at `path`, and that it was recorded against a memory file of
// `memory_size` bytes with `memory_fingerprint`. Every problem is InvalidArgument naming the
// file and what is wrong.
[[nodiscard]] absl::StatusOr<WorkingSet> ReadWorkingSetFile(const std::string& path,
                                                            std::uint64_t memory_size,
                                                            std::uint64_t memory_fingerprint);

}  // namespace ember::snapshot
