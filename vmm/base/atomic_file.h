#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::base {

// A new file that replaces the one at `path` only when committed: Ember's one way of
// (re)writing a file that others read or map (snapshot, working-set, record and kernel-cache
// files). It is created under a name of its own next to `path`, so concurrent writers of the
// same path never share a file, and readers and MAP_PRIVATE mappings of the old file keep its
// inode untouched; Commit() fsyncs it, renames it over `path` and fsyncs the directory, so
// after a crash `path` names the old or the new contents, never a mix. Dropped uncommitted,
// the temporary file is removed.
//
// System calls, all on the VMM thread's seccomp allowlist: openat with
// O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC (the file) and O_RDONLY|O_DIRECTORY|O_CLOEXEC (its
// directory, unless its fd was given), getpid and clock_gettime (the unique name), write,
// fsync, rename, unlink, close.
// Owned by one thread at a time.
class AtomicFile {
 public:
  // Creates the temporary file, empty, with `mode`. `dir_fd`, unless -1: the directory `path`
  // lies in, open for reading (borrowed; it outlives this object), which Commit fsyncs instead
  // of opening the directory by its name (a VMM whose filter opens no directory).
  [[nodiscard]] static absl::StatusOr<AtomicFile> Create(const std::string& path,
                                                         mode_t mode = 0600, int dir_fd = -1);

  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&& other) noexcept;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  // The temporary file, open for writing; borrowed. Only until Commit().
  [[nodiscard]] int fd() const { return fd_.Get(); }
  // Its name, for error messages.
  [[nodiscard]] const std::string& temp_path() const { return temp_path_; }

  // Appends all of `bytes` at the file offset, however many write calls it takes.
  [[nodiscard]] absl::Status Append(std::string_view bytes);

  // What Commit makes sure of beyond the rename's atomicity.
  enum class Durability {
    kDurable,     // fsync of the file before the rename and of the directory after it
    kRenameOnly,  // neither: after a crash `path` may name the old contents (or, on some file
                  // systems, an empty file); for figures rewritten every minute (metrics),
                  // whose writer must not stall on the disk
  };

  // Renames the file over the target, with the syncs `durability` asks for. Call once; on
  // failure the temporary file is removed and the target is left as it was (unless the
  // directory fsync failed after the rename).
  [[nodiscard]] absl::Status Commit(Durability durability = Durability::kDurable);

 private:
  AtomicFile(std::string path, std::string temp_path, UniqueFd fd, int dir_fd)
      : path_(std::move(path)), temp_path_(std::move(temp_path)), fd_(std::move(fd)),
        dir_fd_(dir_fd) {}
  void Discard();

  std::string path_;
  std::string temp_path_;  // empty once committed or discarded
  UniqueFd fd_;
  int dir_fd_ = -1;  // borrowed (Create's dir_fd)
};

// Whether file name `name` is an AtomicFile's temporary file for a target named `target` (both
// names in one directory): what a writer killed before Commit leaves behind.
[[nodiscard]] bool IsAtomicFileTemp(const std::string& name, const std::string& target);

// `bytes` as the new contents of `path`, through an AtomicFile.
// `dir_fd` as AtomicFile::Create's.
[[nodiscard]] absl::Status WriteFileAtomically(
    const std::string& path, std::string_view bytes, mode_t mode = 0600,
    AtomicFile::Durability durability = AtomicFile::Durability::kDurable, int dir_fd = -1);

}  // namespace ember::base
