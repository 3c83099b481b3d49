#pragma once

#include <string>

#include "absl/status/status.h"
#include "rootfs/image/staged_tree.h"

namespace ember::rootfs {

// Applies the tar archive read from `fd` (plain, gzip or zstd; read from its current offset to
// its end) to `tree`, entry by entry, as one layer: OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`)
// remove what earlier layers staged. `display` names the archive in errors. A corrupt or
// truncated archive is DataLoss; an entry escaping the root (".." in its name or a hard
// link's, a path through a symlink) or a device node is InvalidArgument. Either way the tree is
// left part-applied, for the caller to drop. With `sha256` given, it receives the SHA-256 (hex)
// of every byte read from `fd`, for the caller to check against the layer's digest.
[[nodiscard]] absl::Status ApplyLayer(int fd, const std::string& display, StagedTree* tree,
                                      std::string* sha256 = nullptr);

// What the tar archive read from `fd` holds at its top: "oci-layout" (an OCI archive), or
// "manifest.json" and "repositories" without it (a docker-archive, podman save's default
// format), or anything else (a container export). Reads headers only; an unreadable archive
// is kOther, for the export reader to report.
enum class ArchiveKind { kOciLayout, kDockerArchive, kOther };
[[nodiscard]] ArchiveKind ProbeArchive(int fd);

}  // namespace ember::rootfs
