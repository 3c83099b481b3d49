#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::agent_client {

// A VMM's vsock socket `name` in the directory `dir_fd` (AT_FDCWD: `name` is a path), opened
// O_PATH without following a symlink and checked to be a socket, and, given `owner`, to be
// that uid's: a jailed VMM owns the directory its socket lies in, and could otherwise point a
// privileged host process at any socket on the host. FAILED_PRECONDITION when it is something
// else. Any thread; the fd is the caller's, to keep while it connects to SocketFdPath.
[[nodiscard]] absl::StatusOr<base::UniqueFd> OpenSocketFile(int dir_fd, const std::string& name,
                                                            std::optional<uid_t> owner);

// The path to connect to for `socket` (OpenSocketFile's, borrowed): that very socket, whatever
// its name leads to by then, and short enough for a sockaddr_un however deep it lies.
[[nodiscard]] std::string SocketFdPath(const base::UniqueFd& socket);

}  // namespace ember::agent_client
