#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/snapshot.pb.h"
#include "vmm/base/guest_memory.h"

namespace ember::snapshot {

// Writes every region of `memory` to a new file at `path`, regions back to back as in the
// guest memory's own backing file. The file is a new inode renamed over `path` once complete
// (base::AtomicFile), never the old one rewritten: clones map a snapshot's memory file
// MAP_PRIVATE, and `memory` itself may be such a mapping of `path`. All-zero pages are left as holes, so the file is sparse
// and a restore maps them as zero without reading anything. Returns the layout to record in
// the state file.
[[nodiscard]] absl::StatusOr<std::vector<v1::MemoryRegion>> WriteMemoryFile(
    const base::GuestMemory& memory, const std::string& path);

// Diff snapshots: writes only the pages set in `dirty` (one bit per 4 KiB page of the
// memory's backing layout) to a new file of the full size at `path`, replacing it as
// WriteMemoryFile does; everything else stays a hole. Dirty pages are written even when zero, so a reader can tell "changed to zero"
// (data) from "unchanged" (hole).
[[nodiscard]] absl::StatusOr<std::vector<v1::MemoryRegion>> WriteDiffMemoryFile(
    const base::GuestMemory& memory, std::span<const std::uint64_t> dirty,
    const std::string& path);

// Lays the data (non-hole) ranges of the diff memory file `path` over `memory`, at the same
// offsets of its backing layout. For restoring a diff snapshot onto its base.
[[nodiscard]] absl::Status ApplyDiffMemoryFile(const base::GuestMemory& memory,
                                               const std::string& path);

// Merges a chain — a full memory file, then diffs in order — into one full memory file at
// `out_path`: each later file's data ranges replace the earlier contents. `out_path` must not
// be one of the chain (CheckOutputIsNoInput); it is written as a new file, as WriteMemoryFile
// does.
[[nodiscard]] absl::Status MergeMemoryFiles(const std::vector<std::string>& chain,
                                            const std::string& out_path);

// InvalidArgument when `output` is the same file as one of `inputs`: the same device and inode,
// or, where one of them does not exist yet, the same path. For the merge tool and diff
// snapshots, whose inputs stay in use (other diffs build on a base; clones map it) and must not
// be replaced.
[[nodiscard]] absl::Status CheckOutputIsNoInput(const std::string& output,
                                                const std::vector<std::string>& inputs);

// Checks that the file at `path` is the size the state file recorded. InvalidArgument
// naming the file otherwise.
[[nodiscard]] absl::Status CheckMemoryFile(const std::string& path, std::uint64_t expected_size);

}  // namespace ember::snapshot
