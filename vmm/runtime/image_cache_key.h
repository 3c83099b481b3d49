#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::runtime {

// The content key of a container's root directory for ImageCache (hex SHA-256), cheap by
// design (image_cache.h says how, docs/ember-runtime.md why): an overlayfs root by its lower
// layers' identities and a stat fingerprint of its upper directory, any other directory by a
// stat fingerprint of its tree with each entry's device, inode and change time, which no image
// author can set; never reading a file. `programs` (ember-rootfs and the guest
// programs it installs) are in the key by size and modification time. NotFound when `root` is
// not a directory. Any thread; reads /proc/self/mountinfo and the tree.
[[nodiscard]] absl::StatusOr<std::string> RootfsContentKey(
    const std::filesystem::path& root, const std::vector<std::filesystem::path>& programs);

}  // namespace ember::runtime
