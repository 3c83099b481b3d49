#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"
#include "vmm/emberd/jail_leases.h"

namespace ember::emberd {

// The one directory of a jail its ember-vmm may write (ember-jailer's kOutputDir, owned by the
// jail's uid): its console, exit record and snapshots go there. The jail's root is root's.
inline constexpr char kJailOutputDir[] = "out";
// Where in that directory a clone restored through userfaultfd without a recorded working set
// writes the one it records (ember-vmm --working-set), for emberd to take once it has ended.
inline constexpr char kJailWorkingSetFile[] = "working-set";

// A file a jailed ember-vmm needs, put into its chroot by the fork server before the jailer
// runs (emberd's own seccomp filter allows neither link nor chown).
struct JailFile {
  enum class How : char {
    kCopy = 'c',        // copied, root's, readable by the jail's gid (config, state file)
    // Hard-linked (the jail's uid must be able to read it), or on another filesystem copied as
    // kCopy, holes kept (kernel, initrd, a snapshot's memory files).
    kLinkOrCopy = 'l',
    kLink = 'L',        // hard-linked only: a copy of a drive would not be the drive
    kSymlinkHost = 's', // host_path becomes a symlink to the jail's file (the console)
  };
  How how = How::kCopy;
  std::string host_path;  // absolute, on the host (only named in messages when `file` is set)
  std::string jail_name;  // a plain file name in the jail's root, or "out/" and one
  // Index into LaunchSpec::files, or -1: the file is linked (or copied) from that fd, the very
  // file emberd checked, not from host_path, which may name another file by then.
  int file = -1;
};

// Where an unjailed ember-vmm finds LaunchSpec::files[i]: inherited at fd kFirstFileFd + i
// and named in its configuration as /proc/self/fd/<that fd> (reopening an fd through /proc
// gets its file, whatever its name leads to by then).
inline constexpr int kFirstFileFd = 4;
inline constexpr std::size_t kMaxLaunchFiles = 64;
[[nodiscard]] inline std::string InheritedFilePath(std::size_t index) {
  return "/proc/self/fd/" + std::to_string(kFirstFileFd + static_cast<int>(index));
}

// JailFile::jail_name's rule: a plain file name, or kJailOutputDir, '/' and a plain file name;
// nothing that leads elsewhere.
[[nodiscard]] bool IsJailFileName(std::string_view name);

// Each jailed VM's own cgroup, with memory, pids and cpu limits (JailedView says which): emberd
// picks the hierarchies at start-up (jailer::PlaceControllers) and removes a VM's cgroup when
// it deletes the VM.
struct JailCgroups {
  int version = 0;      // 1 or 2; 0: none (no hierarchy here carries memory, pids or cpu)
  std::string parent;   // relative to a hierarchy's root: a VM's cgroup is <parent>/<vm id>
  std::vector<std::string> controllers;  // of memory, pids and cpu: those it limits
  std::vector<std::string> mounts;       // the hierarchies that hold them
  unsigned host_cpus = 1;                // sizes pids.max (io_uring's workers)
};

// Where the VMM pool's jailed slots live until a VM claims one: a directory beside the jails'
// (<chroot_base>/_pool) and a cgroup inside the VMs' parent (<parent>/_pool). No VM id has an
// underscore, so no VM's jail or cgroup is ever this.
inline constexpr char kPoolJailDir[] = "_pool";

// Running ember-vmm through ember-jailer (emberd --jailer).
struct JailerConfig {
  std::string jailer;       // the ember-jailer binary
  std::string chroot_base;  // absolute; a VM's jail is <chroot_base>/ember-vmm/<id>/root
  JailIds ids;              // the fork server refuses a VM identity outside them
  JailCgroups cgroups;      // the fork server adds --cgroup-version and --parent-cgroup
  bool new_pid_ns = false;
  bool isolate = false;  // new ipc, uts and network namespaces (ember-jailer --isolate)
  // <chroot_base>/<exec name>/<id>/root, the directory the jailer chroots into.
  [[nodiscard]] std::string JailRoot(const std::string& vmm_binary, const std::string& id) const;
  // <chroot_base>/<kPoolJailDir>/<exec name>/<slot>/root: a VMM pool slot's jail until a VM
  // claims it (its directory is then renamed to the VM's, JailRoot).
  [[nodiscard]] std::string PoolJailRoot(const std::string& vmm_binary,
                                         const std::string& slot) const;
};

// What one ember-vmm needs to start. Fds are borrowed for the Launch call.
struct LaunchSpec {
  std::string vm_id;
  std::string vm_dir;                 // the VM's state directory
  std::vector<std::string> vmm_args;  // ember-vmm's arguments, without --control-fd
  int control_listen_fd = -1;         // becomes ember-vmm's --control-fd
  int stderr_fd = -1;                 // ember-vmm's log
  std::vector<JailFile> jail_files;   // only for a jailed launch; paths in vmm_args are the jail's
  // Files emberd checked against its path rules, held open (O_PATH), at most kMaxLaunchFiles:
  // an unjailed ember-vmm inherits them (InheritedFilePath), a jailed one gets them linked
  // into its jail (JailFile::file). Owned by the spec.
  std::vector<base::UniqueFd> files;
  // Only for a jailed launch: this VM's ember-jailer options, flag and value pairs of --uid and
  // --gid (once each, the same id of JailIds), --supplementary-gid (the snapshot group),
  // --device, --tap, --resource-limit and --cgroup (only the limits JailedView sets; the fork
  // server refuses any other flag).
  std::vector<std::string> jailer_args;
  // The network namespace the VMM runs in: a clone network's mount (CloneNetworkServer), which
  // must lie in the fork server's clone network directory. Jailed, ember-jailer joins it
  // (--netns, with --isolate's new ipc and uts namespaces) and takes over its taps (--tap);
  // unjailed, the VMM is spawned inside it. Empty: emberd's namespace, or the jail's own.
  std::string netns_path;
  // A VMM pool slot (vm_id is its name, vmm_args only --pool-slot, no files): jailed, it lives
  // in the pool's directory and cgroup (kPoolJailDir) until a VM claims it.
  bool pool_slot = false;
};

// How emberd starts an ember-vmm. The seam for the jailer: a jailed launch execs ember-jailer
// (chroot into the VM dir, uid/gid, cgroups, seccomp) with the same spec; emberd's supervision
// only needs the pid it returns.
class VmmLauncher {
 public:
  virtual ~VmmLauncher() = default;
  // Starts the process in its own session; returns its pid (a child of emberd).
  [[nodiscard]] virtual absl::StatusOr<pid_t> Launch(const LaunchSpec& spec) = 0;
  // Makes the jailed, idle pool slot `slot` (a pool_slot Launch of this launcher; `slot_pidfd`
  // its pid's, borrowed) VM spec.vm_id's jail: what a jailed Launch of `spec` would have made
  // of the jail, the slot's own identity (spec's --uid and --gid must be the slot's). The VMM
  // itself is told nothing (VmmPool sends it its launch). ALREADY_EXISTS, with the slot left as
  // it was, when the VM has a jail already (a relaunch); after any other error the slot is
  // to be discarded, and its jail may have become the VM's. Unimplemented by default.
  [[nodiscard]] virtual absl::Status ClaimSlot(const std::string& /*slot*/, int /*slot_pidfd*/,
                                               const LaunchSpec& /*spec*/) {
    return absl::UnimplementedError("this launcher has no pool slots to claim");
  }
};

// Starts ember-vmm through a fork server: a small helper process forked from emberd at
// start-up, before emberd has threads or its seccomp filter (sandbox.h). A seccomp filter
// survives fork and exec, so an ember-vmm spawned by emberd itself would run under emberd's
// allowlist on top of its own, and emberd's would have to allow execve and everything ember-vmm
// does before its own filters (KVM ioctls, io_uring, executable mappings). Spawned by the
// unfiltered helper, ember-vmm starts clean, and emberd's filter need not allow exec at all.
//
// The helper only ever execs the binary it was started with; emberd sends it the arguments and
// the two fds over a socketpair. It forks a short-lived middle process that posix_spawns
// ember-vmm (own session, default signals) and exits, and emberd is a child subreaper, so
// ember-vmm is re-parented to emberd: Launch's pid is emberd's child, whose exit status emberd
// reaps with waitid as before. The helper exits when emberd's end of the socketpair closes (or
// emberd dies: PR_SET_PDEATHSIG).
class ForkServerLauncher : public VmmLauncher {
 public:
  // Forks the helper for `binary`. Called by emberd's main thread while it is still the only
  // thread (fails otherwise: the helper would inherit locks other threads hold); makes emberd
  // a child subreaper.
  // With `jailer`, the helper execs ember-jailer with `binary` as its --exec-file instead of
  // `binary` itself: without --new-pid-ns the jailer becomes ember-vmm (same pid); with it, the
  // pid is the jailer's foreground parent, which mirrors ember-vmm's exit.
  // `clone_netns_dir` (absolute): where LaunchSpec::netns_path may lie; empty: nowhere, every
  // VMM runs in emberd's namespace or its jail's own.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ForkServerLauncher>> Start(
      std::string binary, std::optional<JailerConfig> jailer = std::nullopt,
      std::string clone_netns_dir = "");

  // Any thread; launches are serialised (one spawn takes about a millisecond).
  [[nodiscard]] absl::StatusOr<pid_t> Launch(const LaunchSpec& spec) override;
  // Any thread, serialised with launches. Needs the jailer.
  [[nodiscard]] absl::Status ClaimSlot(const std::string& slot, int slot_pidfd,
                                       const LaunchSpec& spec) override;

  [[nodiscard]] pid_t helper_pid() const { return helper_pid_; }

 private:
  ForkServerLauncher(std::string binary, base::UniqueFd socket, pid_t helper_pid)
      : binary_(std::move(binary)), socket_(std::move(socket)), helper_pid_(helper_pid) {}

  // Sends one request (`tag`, spec's fields, `tail` as ember-vmm's arguments, `fds` then spec's
  // files attached) and returns the helper's pid or error.
  [[nodiscard]] absl::StatusOr<pid_t> Request(const char* tag, std::size_t tag_size,
                                              const LaunchSpec& spec,
                                              const std::vector<std::string>& tail,
                                              std::vector<int> fds);

  std::string binary_;  // for messages; the helper holds its own copy
  std::mutex mu_;
  base::UniqueFd socket_;  // guarded by mu_: one request and its reply at a time
  pid_t helper_pid_;
};

}  // namespace ember::emberd
