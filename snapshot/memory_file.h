#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/snapshot.pb.h"
#include "snapshot/file_codec.h"
#include "vmm/base/atomic_file.h"
#include "vmm/base/guest_memory.h"
#include "vmm/base/unique_fd.h"

namespace ember::snapshot {

// A memory file holds the guest memory's backing layout (regions back to back), then a
// trailer, integers little-endian:
//   magic "EMBERMEM" (8) | trailer version u32 | reserved u32, zero | memory size u64 |
//   snapshot id (16, snapshot_id.h) | CRC-64/XZ of the trailer before it (8)
// The trailer lies past everything that is mapped, so a restore still maps the file as it is;
// it ties the file to its state file (which names the same id) and says how much of it is
// memory. Read from the file's end in one bounded read.
inline constexpr char kMemoryTrailerMagic[8] = {'E', 'M', 'B', 'E', 'R', 'M', 'E', 'M'};
inline constexpr std::uint32_t kMemoryTrailerVersion = 1;
inline constexpr std::size_t kMemoryTrailerSize = 8 + 4 + 4 + 8 + 16 + 8;

// The trailer's bytes. For the writers below, and for tests that make memory files.
[[nodiscard]] std::string EncodeMemoryTrailer(std::uint64_t memory_size, const std::string& id);

// A memory file as a state file names it: where, the id it must carry, and whether its path
// may end in a symlink (the restorer's own --restore-mem may; a base a state file names not).
// `file`, when set, is where it is opened instead of `path`: a file the restorer opened and
// handed over (emberd's /proc/self/fd/N), so that whatever `path` leads to by now is never
// opened; `path` then only names it (in messages, and as a later diff's base).
struct MemoryFileRef {
  std::string path;
  std::string id;
  Symlinks symlinks = Symlinks::kFollow;
  std::string file{};
};

// Files a restorer handed over for the memory files a state file names as its bases
// (ember-vmm --base-memory-file NAME=FILE): the name as the state file gives it, and the file
// to open for it.
using HandedFiles = std::map<std::string, std::string>;

// The memory files a restore from `state` reads, in the order it lays them down: a diff's
// bases (as the state names them; a base among `bases` is opened from the file handed over
// for it), then `memory`, the restorer's own, with the state's id.
[[nodiscard]] std::vector<MemoryFileRef> MemoryChain(const v1::SnapshotState& state,
                                                     const MemoryFileRef& memory,
                                                     const HandedFiles& bases = {});
// The same for a memory file at `memory_path`, opened by that name.
[[nodiscard]] std::vector<MemoryFileRef> MemoryChain(const v1::SnapshotState& state,
                                                     const std::string& memory_path);

// Opens the memory file `file` (as OpenSnapshotFile does: regular files only, at once) and
// checks its trailer: there, intact, recording `memory_size` bytes of memory, and carrying
// `file.id`. InvalidArgument naming the file and what is wrong otherwise; for a file of another
// snapshot, both ids. The fd's file stays the checked one whatever later happens to the path.
[[nodiscard]] absl::StatusOr<base::UniqueFd> OpenMemoryFile(const MemoryFileRef& file,
                                                            std::uint64_t memory_size);

// OpenMemoryFile's checks, for a restore to refuse a bad file before it builds anything.
[[nodiscard]] absl::Status CheckMemoryFile(const MemoryFileRef& file, std::uint64_t memory_size);

// Writes every region of `memory` to a new file at `path`, regions back to back as in the
// guest memory's own backing file, then the trailer with `id`. The file is a new inode
// renamed over `path` once complete (base::AtomicFile), never the old one rewritten: clones
// map a snapshot's memory file MAP_PRIVATE, and `memory` itself may be such a mapping of
// `path`. All-zero pages are left as holes, so the file is sparse and a restore maps them as
// zero without reading anything. Returns the layout to record in the state file.
[[nodiscard]] absl::StatusOr<std::vector<v1::MemoryRegion>> WriteMemoryFile(
    const base::GuestMemory& memory, const std::string& path, const std::string& id);

// WriteMemoryFile and WriteDiffMemoryFile in two halves, so that a snapshot can let its VM run
// on between them: the file written in full under its temporary name (base::AtomicFile),
// not yet synced nor in place, and the layout to record. Only guest memory is read before
// these return; the caller commits the file once it may replace `path` (the commit's fsync is
// what durability costs, and the guest need not wait for it). Dropped uncommitted, the file
// is removed.
struct WrittenMemoryFile {
  base::AtomicFile file;
  std::vector<v1::MemoryRegion> layout;
};
// `dir_fd` as base::AtomicFile::Create's.
[[nodiscard]] absl::StatusOr<WrittenMemoryFile> WriteMemoryFileUncommitted(
    const base::GuestMemory& memory, const std::string& path, const std::string& id,
    int dir_fd = -1);
[[nodiscard]] absl::StatusOr<WrittenMemoryFile> WriteDiffMemoryFileUncommitted(
    const base::GuestMemory& memory, std::span<const std::uint64_t> dirty,
    const std::string& path, const std::string& id, int dir_fd = -1);

// Diff snapshots: writes only the pages set in `dirty` (one bit per 4 KiB page of the
// memory's backing layout) to a new file of the full size at `path`, replacing it as
// WriteMemoryFile does; everything else stays a hole. Dirty pages are written even when zero, so a reader can tell "changed to zero"
// (data) from "unchanged" (hole).
[[nodiscard]] absl::StatusOr<std::vector<v1::MemoryRegion>> WriteDiffMemoryFile(
    const base::GuestMemory& memory, std::span<const std::uint64_t> dirty,
    const std::string& path, const std::string& id);

// Lays the data (non-hole) ranges of the diff memory file `file` (checked as OpenMemoryFile
// does) over `memory`, at the same offsets of its backing layout. For restoring a diff
// snapshot onto its base.
[[nodiscard]] absl::Status ApplyDiffMemoryFile(const base::GuestMemory& memory,
                                               const MemoryFileRef& file);

// Merges a chain — a full memory file, then diffs in order, each of `memory_size` bytes of
// memory and checked as OpenMemoryFile does — into one full memory file at `out_path` with
// the trailer for `out_id`: each later file's data ranges replace the earlier contents.
// `out_path` must not be one of the chain (CheckOutputIsNoInput); it is written as a new
// file, as WriteMemoryFile does.
[[nodiscard]] absl::Status MergeMemoryFiles(const std::vector<MemoryFileRef>& chain,
                                            std::uint64_t memory_size, const std::string& out_path,
                                            const std::string& out_id);

// InvalidArgument when `output` is the same file as one of `inputs`: the same device and inode,
// or, where one of them does not exist yet, the same path. For the merge tool and diff
// snapshots, whose inputs stay in use (other diffs build on a base; clones map it) and must not
// be replaced.
[[nodiscard]] absl::Status CheckOutputIsNoInput(const std::string& output,
                                                const std::vector<std::string>& inputs);


}  // namespace ember::snapshot
