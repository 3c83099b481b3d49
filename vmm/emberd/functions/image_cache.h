#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "vmm/base/path_rules.h"
#include "vmm/emberd/functions/rootfs_builder.h"

namespace ember::emberd::functions {

// The root images of deployed functions, one file per content: <dir>/<sha256 hex>.ext4, root's,
// 0444 (jailed VMMs read it through a link in their jail; the directory is root's 0700). A
// function's clones attach its image for as long as it lives, so emberd keeps its own
// copy rather than the client's file, which could change under a snapshot that expects it.
// emberd's VMM path rules admit `dir` (main.cc), the API's do not: a client cannot name these
// files. Any thread; adding the same content twice at once is safe (rename is atomic).
class ImageCache {
 public:
  explicit ImageCache(std::string dir) : dir_(std::move(dir)) {}

  // Copies the image `path` names (checked by `paths`, `field` naming it in errors) into the
  // cache unless its content is there already; returns its sha256 hex. A missing or unusable
  // file is INVALID_ARGUMENT naming the field.
  [[nodiscard]] absl::StatusOr<std::string> Add(const base::PathRules& paths,
                                                const std::string& field,
                                                const std::string& path);
  // The image of the OCI archive `path` names (checked by `paths`), built by `builder` unless
  // an image of the same archive is there already: returns the archive's sha256 hex, under
  // which its image is kept. Errors as Add's, and the builder's.
  [[nodiscard]] absl::StatusOr<std::string> AddOciArchive(const base::PathRules& paths,
                                                          RootfsBuilder& builder,
                                                          const std::string& path);
  [[nodiscard]] std::string PathOf(const std::string& sha256) const {
    return dir_ + "/" + sha256 + ".ext4";
  }
  // Removes an image no function uses any more (the caller knows).
  void Remove(const std::string& sha256) const;
  [[nodiscard]] const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

// <state_dir>/fn-images, made if missing (before emberd builds its path rules).
[[nodiscard]] absl::StatusOr<std::string> MakeImageDir(const std::string& state_dir);

}  // namespace ember::emberd::functions
