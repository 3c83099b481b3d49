#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::control {

// What emberd's VMM pool (vmm/emberd/vmm_pool.h) sends a pooled ember-vmm (ember-vmm
// --pool-slot, vmm/pool_slot.h) to make it one VM's VMM: one frame (frame.h's framing) whose
// payload is kPoolLaunchTag and then ember-vmm's arguments, each ended by a NUL, exactly as
// emberd would have exec'd it (without --control-fd), with the VM's fds attached to its first
// byte (SCM_RIGHTS): its control listener, its log (stderr), then the files it inherits
// (emberd's LaunchSpec::files, in order).
inline constexpr char kPoolLaunchTag[] = "ember-pool-launch-v1";
// The most fds one launch carries (base::kMaxPassedFds): the two above and six files.
inline constexpr std::size_t kPoolLaunchFixedFds = 2;

// The frame (header included) for `args`. InvalidArgument for an argument holding a NUL or a
// frame above kMaxFramePayloadBytes.
[[nodiscard]] absl::StatusOr<std::string> EncodePoolLaunch(const std::vector<std::string>& args);

// The arguments of a launch frame's payload; InvalidArgument for anything else.
[[nodiscard]] absl::StatusOr<std::vector<std::string>> DecodePoolLaunch(std::string_view payload);

}  // namespace ember::control
