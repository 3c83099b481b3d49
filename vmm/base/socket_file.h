#pragma once

#include <string>

namespace ember::base {

// connect(2) of the Unix socket `sock` to the socket file `name` in the directory `dir_fd`
// (openat's rules: a relative `name` under `dir_fd`, or an absolute one), never through a
// symlink at `name` itself: a symlink planted there by whoever can write the directory would
// otherwise lead the caller to any socket on the host it may connect to. The socket file is
// opened O_PATH|O_NOFOLLOW, checked to be a socket, and connected to through its
// /proc/self/fd/N link, which reaches that very inode: no window between check and use.
// (Directories above the last component are resolved as openat resolves them; the callers hold
// the directory as an fd, or it is their own.) Needs /proc mounted.
//
// Returns what connect returns (0, or -1 with errno: EINPROGRESS and EAGAIN keep their
// meaning for a non-blocking socket); ELOOP for a symlink at `name`, ENOTSOCK for anything
// else that is not a socket, and openat's errno (ENOENT, ...) for a missing one. Any thread.
[[nodiscard]] int ConnectNoFollow(int sock, int dir_fd, const std::string& name);

}  // namespace ember::base
