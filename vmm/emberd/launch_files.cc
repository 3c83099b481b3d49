#include "vmm/emberd/launch_files.h"

#include "vmm/base/status.h"

namespace ember::emberd {
namespace {

// Adds what `open` made of `path` to spec->files; its index there.
template <typename Open>
absl::StatusOr<int> AddFile(const std::string& field, LaunchSpec* spec, Open open) {
  if (spec->files.size() >= kMaxLaunchFiles) {
    return absl::InvalidArgumentError(field + ": a VM may name at most " +
                                      std::to_string(kMaxLaunchFiles) +
                                      " host files (kernel, initrd, drives, log, metrics, vsock)");
  }
  absl::StatusOr<base::UniqueFd> file = open();
  if (!file.ok()) return file.status();
  spec->files.push_back(std::move(*file));
  return static_cast<int>(spec->files.size() - 1);
}

}  // namespace

absl::StatusOr<int> AddCheckedFile(const base::PathRules& paths, const std::string& field,
                                   const std::string& path, LaunchSpec* spec, ImageDirs images) {
  return AddFile(field, spec, [&] {
    return images == ImageDirs::kReadOnly ? paths.OpenReadOnlyFile(field, path)
                                          : paths.OpenFile(field, path);
  });
}

ImageDirs DriveImageDirs(const v1::Drive& drive) {
  return drive.is_read_only() ? ImageDirs::kReadOnly : ImageDirs::kRefused;
}

absl::StatusOr<int> AddCheckedAppendFile(const base::PathRules& paths, const std::string& field,
                                         const std::string& path, LaunchSpec* spec) {
  return AddFile(field, spec, [&] { return paths.OpenAppendFile(field, path); });
}

absl::StatusOr<std::string> AddCheckedPlace(const base::PathRules& paths,
                                            const std::string& field, const std::string& path,
                                            LaunchSpec* spec) {
  std::string name;
  EMBER_ASSIGN_OR_RETURN(int index, AddFile(field, spec, [&]() -> absl::StatusOr<base::UniqueFd> {
    EMBER_ASSIGN_OR_RETURN(base::PathRules::Place place, paths.OpenPlace(field, path));
    name = std::move(place.name);
    return std::move(place.dir);
  }));
  return InheritedFilePath(static_cast<std::size_t>(index)) + "/" + name;
}

}  // namespace ember::emberd
