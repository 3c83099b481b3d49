#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ember/v1/vm_config.pb.h"
#include "vmm/base/unique_fd.h"
#include "vmm/runtime/runtime_config.h"

namespace ember::runtime {

// A container's jail (docs/ember-runtime.md, "The jail"): ember-jailer builds it at
// CHROOT_BASE/VMM_NAME/JAIL_ID/root (VMM_NAME: the VMM binary's file name) and execs ember-vmm there as a uid and gid of the
// container's own, with no capabilities, in new mount, ipc and uts namespaces (and the
// container's network namespace, or a new empty one), in cgroups of its own. What the VMM
// opens is put into the jail first: its config, kernel, initrd and a hard link of the root
// image; its vsock socket is /out/v.sock there.
struct Jail {
  std::string jail_id;    // ember-jailer's --id
  std::string dir;        // CHROOT_BASE/VMM_NAME/JAIL_ID: removed with the container
  std::string root;       // dir + "/root": the VMM's "/"
  std::uint32_t uid = 0;  // also the gid
  std::string uid_lease;  // the file that holds the uid for the container
  std::vector<std::string> cgroup_dirs;  // where the jailer will put the VMM
};

// The jail id of a container: its id when ember-jailer takes it (letters, digits, dashes; at most
// 64) and it has no "--", else "h--" and a SHA-256 digest of it: distinct containers never
// share one.
[[nodiscard]] std::string JailIdFor(const std::string& container_id);

// Makes the jail's directory (ALREADY_EXISTS when it is there: jails are never shared),
// leases a free uid from the settings' range for the container whose state directory is
// `holder` (a lease whose holder is gone is free again) and plans the jail, for the VMM binary
// at `vmm_path`. Any process; the leases are serialised by a lock file under the chroot base.
[[nodiscard]] absl::StatusOr<Jail> PlanJail(const JailerSettings& settings,
                                            const std::string& container_id,
                                            const std::string& vmm_path,
                                            const std::string& holder, uint32_t memory_mib);

// Puts what the VMM of `vm` opens into the jail, rewrites `vm`'s paths to the jail's and
// returns ember-jailer's argv up to its "--" (the VMM's arguments follow). Call as root before
// the VMM starts. `netns_path` and `tap` ("" none): the container's namespace and the tap the
// VMM attaches to there.
[[nodiscard]] absl::StatusOr<std::vector<std::string>> PrepareJail(
    const JailerSettings& settings, const Jail& jail, const std::string& vmm_path,
    v1::VmConfig* vm, const std::string& netns_path, const std::string& tap, int control_fd);

// Ends whatever still runs in the jail's cgroups (a VMM whose supervisor was killed outright:
// jailed, it has no parent-death signal), removes them, the jail directory and the uid lease.
// When a cgroup does not empty (or cannot be removed) within a few seconds, the lease and the
// directory are kept and FAILED_PRECONDITION names the pids left: a later call retries.
// Otherwise each step is tried and the first failure is returned. Idempotent.
[[nodiscard]] absl::Status DestroyJail(const std::string& dir, const std::string& uid_lease,
                                       const std::vector<std::string>& cgroup_dirs);

// The VMM's vsock socket in the jail whose root is `jail_root` (out/v.sock): the out directory
// opened from root's path and the socket in it without following a symlink, checked to be a
// socket of `jail_uid`'s (the VMM's). The VMM can write out/: by its name the socket could be
// any socket on the host. Connect through agent_client::SocketFdPath while holding the fd.
[[nodiscard]] absl::StatusOr<base::UniqueFd> OpenJailVsock(const std::string& jail_root,
                                                           std::uint32_t jail_uid);

}  // namespace ember::runtime
