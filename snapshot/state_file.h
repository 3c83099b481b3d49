#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "ember/v1/snapshot.pb.h"
#include "vmm/base/atomic_file.h"

namespace ember::snapshot {

// The state file's layout, all integers little-endian:
//   magic "EMBERSNP" (8) | format version u32 | reserved u32, zero | payload length u64 |
//   payload (serialized ember.v1.SnapshotState) | CRC-64/XZ of everything before it (8)
// A reader checks each part before trusting the next, so a foreign, truncated, newer or
// corrupted file is refused with a message saying which.
// Version 2: the payload carries the snapshot's id (snapshot_id.h), which its memory file's
// trailer carries too (memory_file.h).
// Version 3: each device's state is typed (VirtioDeviceState's oneof) and named by the device's
// id. A file of an earlier version (no id to check its memory file against, or opaque device
// bytes) is refused, as is any other version.
inline constexpr char kMagic[8] = {'E', 'M', 'B', 'E', 'R', 'S', 'N', 'P'};
inline constexpr std::uint32_t kFormatVersion = 3;
// Far above any real state (a few hundred KiB for 32 vCPUs), far below memory trouble.
inline constexpr std::uint64_t kMaxPayload = 64u << 20;

// Writes `state` to `path` atomically (base::WriteFileAtomically).
[[nodiscard]] absl::Status WriteStateFile(const std::string& path, const v1::SnapshotState& state);

// WriteStateFile's first half: `state` written under the file's temporary name, neither
// synced nor in place; the caller commits it (Vmm::CommitSnapshot) or drops it (removed).
// `dir_fd` as base::AtomicFile::Create's.
[[nodiscard]] absl::StatusOr<base::AtomicFile> WriteStateFileUncommitted(
    const std::string& path, const v1::SnapshotState& state, int dir_fd = -1);

// Reads and verifies a state file: its framing, and that the payload carries a snapshot id
// and one for each base memory file. Every problem is InvalidArgument naming the file.
[[nodiscard]] absl::StatusOr<v1::SnapshotState> ReadStateFile(const std::string& path);

// The encoding itself, for tests and for in-memory use.
[[nodiscard]] std::string EncodeState(const v1::SnapshotState& state);
[[nodiscard]] absl::StatusOr<v1::SnapshotState> DecodeState(const std::string& bytes);

}  // namespace ember::snapshot
