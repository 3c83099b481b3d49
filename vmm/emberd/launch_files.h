#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "vmm/base/path_rules.h"
#include "vmm/emberd/launcher.h"

namespace ember::emberd {

// Opens `path` (a kernel, an initrd, a drive: a file that must exist) by emberd's path rules
// (`field` names it in errors) and adds the O_PATH fd of what passed to spec->files; returns its
// index there. The VMM then uses that very file, not whatever the name leads to when it gets
// round to opening it: unjailed it reopens InheritedFilePath(index), jailed it finds a link the
// fork server made from the fd (JailFile::file). INVALID_ARGUMENT as PathRules::OpenFile, or
// when a launch would hand over more than kMaxLaunchFiles. Any thread.
[[nodiscard]] absl::StatusOr<int> AddCheckedFile(const base::PathRules& paths,
                                                 const std::string& field,
                                                 const std::string& path, LaunchSpec* spec);

}  // namespace ember::emberd
