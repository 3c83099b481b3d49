#pragma once

#include <optional>

#include "absl/status/status.h"
#include "jailer/seccomp_filter.h"

namespace ember::fcapi {

// The API front's allowlist (front_seccomp.cc): what serving HTTP on its socket, writing the
// files the API names (snapshots are written by ember-vmm), and driving ember-vmm over its
// control channel need. Not there: fork, clone, exec (ember-vmm is started by the launcher
// helper forked before the filter, launcher.h), ioctl, ptrace, mount and namespace calls,
// executable memory, sockets other than AF_UNIX.
[[nodiscard]] jailer::SeccompPolicy FrontPolicy();

// Installs FrontPolicy on the (single-threaded) front. `mode` nullopt installs nothing (the
// API's --no-seccomp or --seccomp off) and says so in the log.
[[nodiscard]] absl::Status InstallFrontFilter(std::optional<jailer::SeccompMode> mode);

}  // namespace ember::fcapi
