#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "ember/v1/vm_config.pb.h"
#include "vmm/base/path_rules.h"
#include "vmm/emberd/launcher.h"

namespace ember::emberd {

// Opens `path` (a kernel, an initrd, a drive: a file that must exist) by emberd's path rules
// (`field` names it in errors) and adds the O_PATH fd of what passed to spec->files; returns its
// index there. The VMM then uses that very file, not whatever the name leads to when it gets
// round to opening it: unjailed it reopens InheritedFilePath(index), jailed it finds a link the
// fork server made from the fd (JailFile::file). INVALID_ARGUMENT as PathRules::OpenFile, or
// when a launch would hand over more than kMaxLaunchFiles. Any thread.
//
// `images`: kReadOnly only for a drive that the configuration emberd itself wrote or recorded
// makes read-only (a function's root image, which every clone of the function attaches); the
// rules' read-only directories are then reachable too (PathRules::OpenReadOnlyFile). A path a
// client chose (a request's, an override's) is never opened so.
enum class ImageDirs { kRefused, kReadOnly };
[[nodiscard]] absl::StatusOr<int> AddCheckedFile(const base::PathRules& paths,
                                                 const std::string& field,
                                                 const std::string& path, LaunchSpec* spec,
                                                 ImageDirs images = ImageDirs::kRefused);

// The rule for `drive` of a configuration emberd itself wrote or recorded: kReadOnly when the
// drive is read-only.
[[nodiscard]] ImageDirs DriveImageDirs(const v1::Drive& drive);

// A log a VMM appends to (PathRules::OpenAppendFile: made if missing, a regular file of emberd's
// own) added to spec->files like AddCheckedFile; the VMM reopens InheritedFilePath(index).
[[nodiscard]] absl::StatusOr<int> AddCheckedAppendFile(const base::PathRules& paths,
                                                       const std::string& field,
                                                       const std::string& path, LaunchSpec* spec);

// A file an unjailed VMM makes by name, maybe again and again (its vsock socket, its metrics
// file, rewritten by rename): the directory `path` lies in, resolved by the rule
// (PathRules::OpenPlace), is added to spec->files; returns the name the VMM is to use,
// "/proc/self/fd/<that fd>/<file name>", which leads into that directory whatever its path
// leads to later. INVALID_ARGUMENT as OpenPlace, or past kMaxLaunchFiles.
[[nodiscard]] absl::StatusOr<std::string> AddCheckedPlace(const base::PathRules& paths,
                                                          const std::string& field,
                                                          const std::string& path,
                                                          LaunchSpec* spec);

}  // namespace ember::emberd
