#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/agent.pb.h"

namespace ember::agent {

// An Exec's limits and privileges (agent.proto's ExecRequest fields 14-22), checked and turned
// into what the forked child applies with plain syscalls (spawn.cc): it may not allocate.
struct ProcessLimits {
  struct Limit {
    int resource = 0;  // RLIMIT_*
    rlimit value{};
  };
  // A capability set as capset(2) and the bounding set take it: bit N is capability N.
  struct Capabilities {
    std::uint64_t bounding = 0;
    std::uint64_t effective = 0;
    std::uint64_t permitted = 0;
    std::uint64_t inheritable = 0;
    std::uint64_t ambient = 0;
  };
  std::vector<gid_t> additional_gids;
  std::vector<Limit> rlimits;
  bool no_new_privileges = false;
  std::optional<Capabilities> capabilities;  // nullopt: what the uid gets
};

// The request's limits; InvalidArgument naming a malformed rlimit or an unknown capability.
[[nodiscard]] absl::StatusOr<ProcessLimits> LimitsOf(const v1::ExecRequest& request);

// Capability `name`'s number ("CAP_SYS_ADMIN" is 21); nullopt for a name capabilities(7) lacks.
[[nodiscard]] std::optional<int> CapabilityNumber(const std::string& name);

}  // namespace ember::agent
