#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace ember::rootfs {

// What an image needs room for, from a walk of the tree it is built from.
struct TreeStats {
  uint64_t data_bytes = 0;  // file, directory and long-symlink blocks, 4 KiB each, holes free
  uint64_t entries = 0;     // inodes: every file, directory, symlink (hard links once)
};

// Walks the directory tree open at `root_fd` without following symlinks. A device node is bad
// input (InvalidArgument naming it relative to `display_root`): an image carries none, the
// guest's devtmpfs provides them. Sockets are skipped, as mke2fs -d skips them.
[[nodiscard]] absl::StatusOr<TreeStats> ScanTree(int root_fd, const std::string& display_root);

}  // namespace ember::rootfs
