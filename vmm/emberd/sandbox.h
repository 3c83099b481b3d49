#pragma once

#include "absl/status/status.h"

namespace ember::emberd {

// emberd's own seccomp allowlist, installed once it serves. The seam for jailer/'s seccomp
// builder (jailer/ owns the filter definitions): today it installs nothing and says so.
// emberd needs (beyond glibc/gRPC's usual set): socket/bind/listen/accept4/connect on
// AF_UNIX (+AF_INET/6 with --tcp), epoll_*, eventfd2, pidfd_open, pidfd_send_signal, waitid,
// clone3/vfork+execve (posix_spawn of ember-vmm or ember-jailer), openat/mkdirat/renameat/
// unlinkat/fsync/fdatasync/getdents64 (state dir), pread64 (console), futex, madvise, mmap.
[[nodiscard]] absl::Status InstallSandbox();

}  // namespace ember::emberd
