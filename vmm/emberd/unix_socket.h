#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::emberd {

// A Unix stream socket bound at `path` (an old file there is replaced), mode 0600, listening;
// close-on-exec. For a VM's control socket, which its ember-vmm inherits.
[[nodiscard]] absl::StatusOr<base::UniqueFd> ListenUnix(const std::string& path);

// A connection (non-blocking, close-on-exec) to the Unix stream socket at `path`.
[[nodiscard]] absl::StatusOr<base::UniqueFd> ConnectUnix(const std::string& path);

}  // namespace ember::emberd
