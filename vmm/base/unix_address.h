#pragma once

#include <sys/un.h>

#include <string>

#include "absl/status/statusor.h"

namespace ember::base {

// The address of the Unix socket at `path`. InvalidArgument, naming the path, when it is empty
// or does not fit sun_path with its NUL (108 bytes on Linux).
[[nodiscard]] absl::StatusOr<sockaddr_un> UnixAddress(const std::string& path);

}  // namespace ember::base
