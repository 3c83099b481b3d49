#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/snapshot.pb.h"
#include "vmm/base/guest_memory.h"

namespace ember::snapshot {

// Writes every region of `memory` to a new file at `path`, regions back to back as in the
// guest memory's own backing file. All-zero pages are left as holes, so the file is sparse
// and a restore maps them as zero without reading anything. Returns the layout to record in
// the state file.
[[nodiscard]] absl::StatusOr<std::vector<v1::MemoryRegion>> WriteMemoryFile(
    const base::GuestMemory& memory, const std::string& path);

// Checks that the file at `path` is the size the state file recorded. InvalidArgument
// naming the file otherwise.
[[nodiscard]] absl::Status CheckMemoryFile(const std::string& path, std::uint64_t expected_size);

}  // namespace ember::snapshot
