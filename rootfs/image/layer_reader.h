#pragma once

#include <string>

#include "absl/status/status.h"
#include "rootfs/image/staged_tree.h"

namespace ember::rootfs {

// Applies the tar archive at `archive_path` (plain, gzip or zstd) to `tree`, entry by entry,
// as one layer: OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) remove what earlier layers staged.
// `display` names the archive in errors. A corrupt or truncated archive is DataLoss; an entry
// escaping the root (".." in its name or a hard link's, a path through a symlink) or a device
// node is InvalidArgument. Either way the tree is left part-applied, for the caller to drop.
[[nodiscard]] absl::Status ApplyLayer(const std::string& archive_path, const std::string& display,
                                      StagedTree* tree);

}  // namespace ember::rootfs
