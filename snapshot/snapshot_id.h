#pragma once

#include <cstddef>
#include <string>

namespace ember::snapshot {

// A snapshot's id: 16 bytes that its state file and its memory file both carry, so a restore
// can tell that the two belong together (a crash between their two renames leaves a state
// file and a memory file of two different snapshots), and a diff's state file names the id of
// every memory file of its chain. Not a secret and not an authentication: a crafted file can
// carry any id; it catches accidents, not attacks.
inline constexpr std::size_t kSnapshotIdSize = 16;

// A new id, different from every other this process made, and from other processes' but by
// chance (2^-64). Makes no system call, so any thread may call it under its seccomp filter.
[[nodiscard]] std::string NewSnapshotId();

// `id` in hex, for messages.
[[nodiscard]] std::string SnapshotIdText(const std::string& id);

}  // namespace ember::snapshot
