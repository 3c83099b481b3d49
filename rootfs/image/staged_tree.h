#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "rootfs/image/ext4_image.h"
#include "vmm/base/unique_fd.h"

namespace ember::rootfs {

// Owner, mode and time of an entry as its archive gives them; the staged copy holds only what
// an unprivileged user can give it, and the image gets the rest from InodeFixes().
struct EntryMeta {
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t mode = 0;  // file type and permission bits, as st_mode
  int64_t mtime = 0;  // seconds since the epoch
  // Extended attributes (file capabilities, SELinux labels, user.*): name, value. An
  // unprivileged stager cannot set most of them, so they go to the image as fixes.
  std::vector<std::pair<std::string, std::string>> xattrs;
};

// How many bytes the trees of one build may stage at most (--max-bytes), counted as they are
// written, so that a small archive cannot expand to fill the disk: each file's size as its
// entry declares it (holes included: mke2fs -d would still copy them), kEntryBytes for each
// entry's own metadata, counted again when a later layer replaces it. Owned by the build;
// its trees borrow it. One thread.
class StagedBytes {
 public:
  static constexpr uint64_t kEntryBytes = 512;  // an inode and a directory entry, roughly

  explicit StagedBytes(std::optional<uint64_t> limit) : limit_(limit) {}
  // Counts `bytes` more for `path` (relative to the root); past the limit InvalidArgument
  // naming the limit and the path, and nothing more may be staged.
  [[nodiscard]] absl::Status Charge(uint64_t bytes, const std::string& path);
  [[nodiscard]] uint64_t used() const { return used_; }

 private:
  std::optional<uint64_t> limit_;  // none: no limit
  uint64_t used_ = 0;
};

// A root file system being assembled from archive entries (a container export, OCI layers in
// order) in a directory of ember-rootfs's own, for mke2fs -d to copy. Written without root:
// every staged entry is owned by ember-rootfs and readable by it, and the archive's owners and
// modes are kept aside for the image.
//
// Paths are relative to the root, '/'-separated, already normalized (NormalizePath). Nothing is
// ever written outside the root: each parent directory is opened component by component
// without following symlinks, so an entry whose path goes through a symlink (the way a hostile
// layer writes outside) is refused. Image builders record every entry at its real path, so a
// well-formed layer never does that. Owned by one thread.
class StagedTree {
 public:
  // Makes the staging directory `name` in the directory open at `parent_fd` (its path is
  // `parent_path`). Its root starts as a directory 0755 owned by root, as do parents no entry
  // names (timed now). What is staged counts against `budget` (borrowed; null: no limit).
  [[nodiscard]] static absl::StatusOr<StagedTree> Create(int parent_fd,
                                                         const std::string& parent_path,
                                                         const std::string& name,
                                                         StagedBytes* budget = nullptr);

  StagedTree(StagedTree&&) noexcept = default;
  StagedTree& operator=(StagedTree&&) noexcept = default;

  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] int fd() const { return root_.Get(); }

  // Counts `bytes` of the entry at `path` against the build's budget (see StagedBytes).
  [[nodiscard]] absl::Status Charge(uint64_t bytes, const std::string& path) {
    return budget_ == nullptr ? absl::OkStatus() : budget_->Charge(bytes, path);
  }

  // Starts the next layer: whiteouts only remove what earlier layers staged.
  void BeginLayer() { this_layer_.clear(); }

  // Each Add replaces what the path held unless both are directories (a directory keeps its
  // contents and takes the new owner and mode). Missing parents are made (0755, root).
  [[nodiscard]] absl::Status AddDirectory(const std::string& path, const EntryMeta& meta);
  // The regular file at `path`, created empty; the caller writes its data through the fd.
  [[nodiscard]] absl::StatusOr<base::UniqueFd> AddFile(const std::string& path,
                                                       const EntryMeta& meta);
  [[nodiscard]] absl::Status AddSymlink(const std::string& path, const std::string& target,
                                        const EntryMeta& meta);
  [[nodiscard]] absl::Status AddFifo(const std::string& path, const EntryMeta& meta);
  // A hard link at `path` to the staged non-directory `target`.
  [[nodiscard]] absl::Status AddHardLink(const std::string& path, const std::string& target);

  // An OCI whiteout `.wh.NAME`: removes `path` (dir/NAME) as earlier layers left it.
  [[nodiscard]] absl::Status Whiteout(const std::string& path);
  // An opaque directory (`.wh..wh..opq` in `dir`): removes what earlier layers put in it.
  [[nodiscard]] absl::Status MakeOpaque(const std::string& dir);

  // Gives every staged entry its archive mtime (directories after their contents), for
  // mke2fs -d to copy. Call once, after the last entry.
  [[nodiscard]] absl::Status SetTimes();

  // The owners and modes the staged tree could not hold, for the image.
  [[nodiscard]] std::vector<InodeFix> InodeFixes() const;

 private:
  StagedTree(std::string path, base::UniqueFd root);

  // The parent directory of `path`, open, and its last component; missing parents are made
  // when `create` (else NotFound). A symlink or a non-directory on the way is InvalidArgument.
  absl::StatusOr<base::UniqueFd> OpenParent(const std::string& path, bool create,
                                            std::string* name);
  // Makes room at `path` for a new entry of type `type`: removes what is there, unless both
  // are directories. True when a directory is already there.
  absl::StatusOr<bool> Replace(int parent_fd, const std::string& name, const std::string& path,
                               uint32_t type);
  void Forget(const std::string& path);  // the metadata of `path` and all below it
  void Record(const std::string& path, const EntryMeta& meta);

  std::string path_;
  base::UniqueFd root_;
  StagedBytes* budget_ = nullptr;  // borrowed; null: no limit
  uid_t staged_uid_;
  gid_t staged_gid_;
  std::map<std::string, EntryMeta> entries_;  // every staged entry by path; "" is the root
  std::set<std::string> this_layer_;          // paths the current layer wrote
};

// `name` as an archive gives it, as a path relative to the root: leading "/" and "./" and
// empty or "." components dropped. ".." anywhere (a path escaping the root) and newlines
// (which debugfs cannot take) are InvalidArgument. The root itself is "".
[[nodiscard]] absl::StatusOr<std::string> NormalizePath(const std::string& name);

// The permission bits a staged entry of `mode` gets: its own rwx bits, and always enough for
// ember-rootfs to read it and write into it (never setuid, setgid or sticky).
[[nodiscard]] uint32_t StagedPermissions(uint32_t mode);

}  // namespace ember::rootfs
