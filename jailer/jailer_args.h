#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::jailer {

// Longest accepted --id; the id becomes a path component and a cgroup name.
inline constexpr size_t kMaxIdLength = 64;
// RLIMIT_NOFILE applied when --resource-limit no-file=N is not given (Firecracker's default).
inline constexpr uint64_t kDefaultNoFileLimit = 2048;
// Where jails are built when --chroot-base-dir is not given.
inline constexpr char kDefaultChrootBase[] = "/srv/jailer";

// The one directory of the jail the jailed binary may write: /<kOutputDir>, owned by its
// uid:gid, mode 0700. The jail's root and everything else the jailer puts there are root's.
inline constexpr char kOutputDir[] = "out";

struct CgroupSetting {
  std::string file;   // e.g. "memory.max"; never contains '/'.
  std::string value;  // written verbatim.
};

// Everything the command line asks of the jailer, already validated: every path is free of
// "..", the id is safe as a path component, uid/gid are not root unless allow_root.
struct JailerArgs {
  std::string id;
  std::string exec_file;  // as given (absolute or relative to the jailer's cwd).
  uid_t uid = 0;
  gid_t gid = 0;
  // The binary's one supplementary group (--supplementary-gid); none when not given. emberd
  // gives a restored clone the group its snapshot files are readable by.
  std::optional<gid_t> supplementary_gid;
  bool allow_root = false;
  std::string chroot_base_dir = kDefaultChrootBase;
  std::optional<std::string> netns;
  bool new_pid_ns = false;
  // New ipc, uts and network namespaces (--isolate): no System V objects, hostname or network
  // interface of the host. With --netns the network namespace is that one instead (emberd's
  // clone networks, made ahead with their taps, veth pairs and NAT).
  bool isolate = false;
  // Tap devices created in the jail's network namespace (or, when a --netns namespace has them
  // already, taken over), owned by uid:gid and persistent until the namespace goes, so that
  // the VMM attaches to them without CAP_NET_ADMIN.
  std::vector<std::string> taps;
  // The device nodes the jail gets ("kvm", "tun", "userfaultfd"); all three when not given.
  std::optional<std::vector<std::string>> devices;
  int cgroup_version = 2;
  std::vector<CgroupSetting> cgroups;
  std::optional<std::string> parent_cgroup;  // relative; defaults to ExecName().
  std::optional<uint64_t> fsize_limit;
  std::optional<uint64_t> nproc_limit;
  uint64_t no_file_limit = kDefaultNoFileLimit;
  bool daemonize = false;
  std::optional<int> pass_fd;
  std::vector<std::string> vmm_args;  // everything after "--", passed on verbatim.
  bool help = false;                  // --help: print usage and exit 0; nothing else is set.

  // Last path component of exec_file: the binary's name inside the jail.
  [[nodiscard]] std::string ExecName() const;
  // <chroot_base_dir>/<exec name>/<id>/root
  [[nodiscard]] std::string ChrootDir() const;
  // The cgroup path, relative to a hierarchy's root: <parent_cgroup or exec name>/<id>.
  [[nodiscard]] std::string CgroupRelativePath() const;
};

// Parses argv[1..] (without the program name). Every refusal is InvalidArgument with a
// one-line message naming the flag and what is wrong with it. Touches no files.
[[nodiscard]] absl::StatusOr<JailerArgs> ParseJailerArgs(const std::vector<std::string>& argv);

// Checks that the exec file exists and is a regular, executable file (InvalidArgument if not).
[[nodiscard]] absl::Status CheckExecFile(const std::string& path);

// The --help text.
[[nodiscard]] std::string JailerUsage();

}  // namespace ember::jailer
