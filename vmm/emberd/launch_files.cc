#include "vmm/emberd/launch_files.h"

namespace ember::emberd {

absl::StatusOr<int> AddCheckedFile(const base::PathRules& paths, const std::string& field,
                                   const std::string& path, LaunchSpec* spec) {
  if (spec->files.size() >= kMaxLaunchFiles) {
    return absl::InvalidArgumentError(field + ": a VM may name at most " +
                                      std::to_string(kMaxLaunchFiles) +
                                      " host files (kernel, initrd and drives)");
  }
  absl::StatusOr<base::UniqueFd> file = paths.OpenFile(field, path);
  if (!file.ok()) return file.status();
  spec->files.push_back(std::move(*file));
  return static_cast<int>(spec->files.size() - 1);
}

}  // namespace ember::emberd
