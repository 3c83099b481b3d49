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

// Where cgroups with `wanted` controllers go on a host: the v2 hierarchy when it carries all
// of them (`v2_controllers`: its cgroup.controllers), else the v1 hierarchies of those a v1
// hierarchy carries. The jailer takes one version per jail, so a hybrid host whose v2
// hierarchy carries only some of them gets those from v1, or goes without.
struct CgroupPlacement {
  int version = 0;                       // 1 or 2; 0: no hierarchy carries any of them
  std::vector<std::string> controllers;  // the wanted controllers the version carries
  std::vector<std::string> mounts;       // their hierarchies' mount points, each once
  std::vector<std::string> missing;      // the wanted controllers nothing here carries
};
[[nodiscard]] CgroupPlacement PlaceControllers(const std::vector<MountInfoEntry>& mounts,
                                               const std::string& v2_controllers,
                                               const std::vector<std::string>& wanted);

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
