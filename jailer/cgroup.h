#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "jailer/jailer_args.h"

namespace ember::jailer {

// One line of /proc/self/mountinfo, reduced to what cgroup lookup needs.
struct MountInfoEntry {
  std::string mount_point;                 // unescaped ("\040" -> ' ').
  std::string fs_type;                     // "cgroup", "cgroup2", ...
  std::vector<std::string> super_options;  // for cgroup v1: the controllers, "rw", ...
};

// Parses the text of a mountinfo file; malformed lines are skipped.
[[nodiscard]] std::vector<MountInfoEntry> ParseMountInfo(const std::string& text);

// The mount point of the cgroup v2 hierarchy (NotFound if none is mounted).
[[nodiscard]] absl::StatusOr<std::string> FindCgroup2Mount(
    const std::vector<MountInfoEntry>& mounts);

// The mount point of the cgroup v1 hierarchy that carries `controller` (NotFound if none).
[[nodiscard]] absl::StatusOr<std::string> FindCgroup1Mount(
    const std::vector<MountInfoEntry>& mounts, const std::string& controller);

// "memory.max" -> "memory". Settings are validated by ParseJailerArgs, so there is a dot.
[[nodiscard]] std::string ControllerOf(const std::string& file);

// Creates <hierarchy>/<args.CgroupRelativePath()> in every hierarchy the --cgroup settings
// need (one for v2, one per controller mount for v1), writes the settings there and moves
// `pid` into it. For v2 it enables the controllers on the way down. Returns the leaf
// directories it used so a caller (tests, a supervisor) can remove them later.
// Does nothing when args.cgroups is empty. Called by the jailer before it forks, as root.
[[nodiscard]] absl::StatusOr<std::vector<std::string>> SetUpCgroups(const JailerArgs& args,
                                                                    pid_t pid);

}  // namespace ember::jailer
