#pragma once

#include <sys/types.h>

#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "jailer/jailer_args.h"

namespace ember::jailer {

// Checks that --pass-fd names an open descriptor (InvalidArgument if not). Call before
// RunJailer, which would otherwise close it as one more inherited fd.
[[nodiscard]] absl::Status CheckPassFd(const JailerArgs& args);

// Builds the jail described by `args` and execs the binary in it. Called once by main() of
// ember-jailer, as root, single-threaded, with validated args.
//
// On success the calling process either has become the jailed binary (no return), or, when it
// had to fork (--daemonize, --new-pid-ns), it is the parent and the returned value is its exit
// code: 0 once a daemonized child has exec'd, or the child's own status when --new-pid-ns
// runs in the foreground. An error means the jail could not be built or entered; in a forked
// child the error is handed to the parent, and this function does not return.
[[nodiscard]] absl::StatusOr<int> RunJailer(const JailerArgs& args);

// Drops to uid/gid with no supplementary groups but `supplementary` (when given), an empty
// capability bounding set, no
// ambient, inheritable, permitted or effective capabilities, and no_new_privs set; then
// verifies the result. Exposed for tests and for the jailer's foreground parent.
[[nodiscard]] absl::Status DropPrivileges(uid_t uid, gid_t gid,
                                          std::optional<gid_t> supplementary = std::nullopt);

}  // namespace ember::jailer
