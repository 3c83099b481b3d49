#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "rootfs/image/tree_scan.h"

namespace ember::rootfs {

// An inode whose owner, mode or extended attributes the tree handed to mke2fs -d does not hold
// (a staging tree made without root owns everything itself), set afterwards with debugfs.
struct InodeFix {
  std::string path;  // relative to the image's root; "" is the root
  bool set_owner = false;
  uint32_t uid = 0;
  uint32_t gid = 0;
  bool set_mode = false;
  uint32_t mode = 0;  // the whole i_mode: file type and permission bits
  std::vector<std::pair<std::string, std::string>> xattrs;  // name, value: each set
};

// A host file copied into the image, owned by root: ember-init, ember-agent, image.json.
struct GuestFile {
  std::string image_path;  // relative to the image's root, e.g. "sbin/ember-init"
  std::string host_path;
  uint32_t permissions = 0644;
};

// A directory the guest mounts on (/proc, /dev, ...) that ember-init cannot make on a read-only
// root: made empty and owned by root when the tree has nothing at its path.
struct MountPoint {
  std::string image_path;  // relative to the image's root, one component, e.g. "proc"
  uint32_t permissions = 0755;
};

struct ImagePlan {
  std::string tree;                    // the directory mke2fs -d copies
  TreeStats stats;                     // of `tree`, for the automatic size
  std::optional<uint64_t> size_bytes;  // --size; automatic when empty
  std::vector<InodeFix> fixes;
  std::vector<GuestFile> guest_files;
  std::vector<MountPoint> mount_points;
};

// The automatic image size for a tree of `stats` plus `extra_bytes` of added files: the content
// with headroom for the guest to write (a quarter more, at least 64 MiB), the inode tables,
// the journal mke2fs makes for that size, rounded up to a MiB.
[[nodiscard]] uint64_t AutomaticImageSize(const TreeStats& stats, uint64_t extra_bytes);
// The inode count the image is made with: the tree's and half as many again for the guest.
[[nodiscard]] uint64_t AutomaticInodeCount(const TreeStats& stats);

// Builds a sparse ext4 image of `plan` at `output`: mke2fs -d into a temporary file beside it,
// then one debugfs script for the fixes, the guest files and the missing mount points, then a
// rename. `tree_fd` is
// `plan.tree`, open, for looking up where the guest files go (symlinks resolved inside the
// tree, as debugfs resolves them in the image). On any error nothing is left at `output`'s
// name (an existing file there is kept). A --size too small for the tree is InvalidArgument.
[[nodiscard]] absl::Status BuildImage(const ImagePlan& plan, int tree_fd,
                                      const std::string& output);

// `path` quoted for a debugfs command line (its parser's double quotes, `""` for a quote).
// Newlines cannot be quoted: the caller refuses such names before.
[[nodiscard]] std::string DebugfsQuote(const std::string& path);

}  // namespace ember::rootfs
