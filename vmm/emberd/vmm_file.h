#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::emberd {

// Files a VMM writes and emberd (root) reads: the console, the exit record. A VMM, jailed or
// not, is assumed hostile, so such a file is opened with openat2 from the directory the VMM
// writes into (`dir`), never through a symlink (RESOLVE_NO_SYMLINKS) and never above `dir`
// (`in_root`: RESOLVE_IN_ROOT, `dir` is a jail's root; else RESOLVE_BENEATH), non-blocking,
// and only if it is a regular file. NOT_FOUND if it is not there (yet); FAILED_PRECONDITION
// naming `name` if it is a symlink or not a regular file.
[[nodiscard]] absl::StatusOr<base::UniqueFd> OpenVmmFile(const std::string& dir,
                                                         const std::string& name, bool in_root);

// At most `limit` bytes of the file open at `fd` (borrowed), from its start.
[[nodiscard]] absl::StatusOr<std::string> ReadAtMost(int fd, std::size_t limit);

}  // namespace ember::emberd
