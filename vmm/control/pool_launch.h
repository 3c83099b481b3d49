#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::control {

// What emberd's VMM pool (vmm/emberd/vmm_pool.h) sends a pooled ember-vmm (ember-vmm
// --pool-slot, vmm/pool_slot.h) to make it one VM's VMM: one frame (frame.h's framing) whose
// payload is kPoolLaunchTag, the VMM's file size bound in decimal (RLIMIT_FSIZE; 0: none) and
// then ember-vmm's arguments, each ended by a NUL, exactly as
// emberd would have exec'd it (without --control-fd), with the VM's fds attached to its first
// byte (SCM_RIGHTS): its control listener, its log (stderr), then the files it inherits
// (emberd's LaunchSpec::files, in order).
inline constexpr char kPoolLaunchTag[] = "ember-pool-launch-v2";
// The most fds one launch carries (base::kMaxPassedFds): the two above and six files.
inline constexpr std::size_t kPoolLaunchFixedFds = 2;

struct PoolLaunch {
  std::vector<std::string> args;
  // The RLIMIT_FSIZE the slot sets on itself (soft and hard) before it runs on as the VM's VMM;
  // 0: none. A jailed VM's file size bound: the slot started without one, and lowering its own
  // needs no privilege where raising another uid's would (CAP_SYS_RESOURCE).
  std::uint64_t file_size_limit = 0;
};

// The frame (header included) for `launch`. InvalidArgument for an argument holding a NUL or a
// frame above kMaxFramePayloadBytes.
[[nodiscard]] absl::StatusOr<std::string> EncodePoolLaunch(const PoolLaunch& launch);

// The launch of a frame's payload; InvalidArgument for anything else.
[[nodiscard]] absl::StatusOr<PoolLaunch> DecodePoolLaunch(std::string_view payload);

}  // namespace ember::control
