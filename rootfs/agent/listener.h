#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "ember/v1/agent.pb.h"
#include "vmm/base/unique_fd.h"

namespace ember::agent {

// A listening vsock socket on `port` of any CID (the guest's own).
[[nodiscard]] absl::StatusOr<base::UniqueFd> ListenVsock(std::uint32_t port);
// A listening Unix socket at `path` (host tests). A socket left there by an earlier agent is
// replaced; any other file is an error.
[[nodiscard]] absl::StatusOr<base::UniqueFd> ListenUnix(const std::string& path);

// Sends the ready event (agent.proto, AgentEvent) to the host over vsock, CID 2 port
// AGENT_PORT_READY_EVENT, or to the Unix socket `unix_path` when it is not empty.
[[nodiscard]] absl::Status SendReadyEvent(const v1::ReadyInfo& info, const std::string& unix_path);

}  // namespace ember::agent
