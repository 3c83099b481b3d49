#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "vmm/base/path_rules.h"
#include "vmm/emberd/functions/rootfs_builder.h"

namespace ember::emberd::functions {

// The root images of deployed functions, one file per content: <dir>/<key>.ext4, root's, 0444
// (jailed VMMs read it through a link in their jail; the directory is root's 0700). A key is
// ImageKey's: a raw image's sha256 hex, or "oci-" and the sha256 hex of the archive an image
// was built from, so that an image built from an archive never stands for raw image bytes of
// the same digest (nor the other way). A function's clones attach its image for as long as it
// lives, so emberd keeps its own copy rather than the client's file, which could change under
// a snapshot that expects it (or, for an archive, between its hash and its build).
// emberd's VMM path rules admit `dir` (main.cc), the API's do not: a client cannot name these
// files. Each image is counted: Add and AddOciArchive take a reference, Release drops one and
// removes the file with the last, all under one lock, so that an image a deploy in flight has
// just been given is never removed by the deletion of another function that used it. Any
// thread.
class ImageCache {
 public:
  // emberd's --fn-max-archive-mib default.
  static constexpr std::uint64_t kDefaultMaxArchiveBytes = std::uint64_t{4096} << 20;

  // `max_archive_bytes`: the largest OCI archive AddOciArchive copies.
  explicit ImageCache(std::string dir, std::uint64_t max_archive_bytes = kDefaultMaxArchiveBytes)
      : dir_(std::move(dir)), max_archive_bytes_(max_archive_bytes) {}

  // Copies the image `path` names (checked by `paths`, `field` naming it in errors) into the
  // cache unless its content is there already; returns its sha256 hex, its key, with a
  // reference the caller releases. A missing or unusable file is INVALID_ARGUMENT naming the
  // field.
  [[nodiscard]] absl::StatusOr<std::string> Add(const base::PathRules& paths,
                                                const std::string& field, const std::string& path);
  // The image of the OCI archive `path` names (checked by `paths`; a regular file), built by
  // `builder` from a private copy of the archive unless an image of the same archive is there
  // already: returns the archive's sha256 hex, with a reference to ImageKey(true, sha) the
  // caller releases. Errors as Add's, and the builder's; an archive larger than the cache's
  // limit is INVALID_ARGUMENT naming the limit, refused before or while it is copied, its copy
  // removed.
  [[nodiscard]] absl::StatusOr<std::string> AddOciArchive(const base::PathRules& paths,
                                                          RootfsBuilder& builder,
                                                          const std::string& path);
  [[nodiscard]] std::string PathOf(const std::string& key) const {
    return dir_ + "/" + key + ".ext4";
  }
  // One more reference to an image that is there (a function emberd recovers).
  void Acquire(const std::string& key);
  // Drops a reference Add, AddOciArchive or Acquire took; the last removes the image.
  void Release(const std::string& key);
  // Removes every file of the cache no reference holds (images no function uses, copies cut
  // short) and every directory with all it holds (a build cut short). Only while no Add or
  // AddOciArchive runs (emberd's start).
  void RemoveUnreferenced();
  [[nodiscard]] const std::string& dir() const { return dir_; }

 private:
  // Under mu_: `temp` becomes the image of `key` unless that is there already (then `temp`
  // goes); one more reference to it.
  [[nodiscard]] absl::Status Install(const std::string& temp, const std::string& key);

  const std::string dir_;
  const std::uint64_t max_archive_bytes_;
  std::mutex mu_;
  std::map<std::string, unsigned> refs_;  // guarded by mu_: key -> references
};

// The cache key of a function's image: its sha256 hex, prefixed "oci-" when it was built from
// an OCI archive (`from_archive`) whose digest `sha256` is.
[[nodiscard]] std::string ImageKey(bool from_archive, const std::string& sha256);

// <state_dir>/fn-images, made if missing (before emberd builds its path rules).
[[nodiscard]] absl::StatusOr<std::string> MakeImageDir(const std::string& state_dir);

}  // namespace ember::emberd::functions
