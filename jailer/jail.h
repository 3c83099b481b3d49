#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

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

// A persistent tap `name` in the caller's network namespace, owned by uid:gid, so that a VMM
// of that uid attaches to it without CAP_NET_ADMIN; an existing one of that name is taken
// over. Used by the jailer (--tap) and by emberd's fork server for a jail that runs already (a
// claimed VMM pool slot, from inside the slot's network namespace). Root.
[[nodiscard]] absl::Status CreateOwnedTap(const std::string& name, uid_t uid, gid_t gid);

// Adds the device nodes `names` (of "kvm", "tun", "userfaultfd") to the jail whose root is at
// `root` on the caller's side (its /dev and /dev/net, which the jailer made root's), owned by
// uid:gid, mode 0600, replacing nodes of those names. For a jail that runs already (a claimed
// VMM pool slot gets the nodes its VM uses). Root.
[[nodiscard]] absl::Status AddDeviceNodes(const std::string& root,
                                          const std::vector<std::string>& names, uid_t uid,
                                          gid_t gid);

}  // namespace ember::jailer
