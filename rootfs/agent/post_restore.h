#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "ember/v1/agent.pb.h"

namespace ember::agent {

// Most entropy one PostRestore may add.
inline constexpr std::size_t kMaxEntropyBytes = 64 * 1024;

// FNV-1a, 64 bits: what PostRestoreResult reports of the entropy it added.
[[nodiscard]] std::uint64_t Fnv1a64(std::string_view bytes);

// Applies what a restored clone must change (agent.proto, PostRestoreRequest), in this
// order: entropy (RNDADDENTROPY, credited), wall clock (clock_settime, unless `set_clock` is
// off), hostname, network settings (rtnetlink: the MAC with the link down, every IPv4 address
// replaced, the link up, the default route). Every step is tried; the first failure's code
// and all failures' messages come back. The result's boot_id is the caller's to fill.
[[nodiscard]] absl::StatusOr<v1::PostRestoreResult> ApplyPostRestore(
    const v1::PostRestoreRequest& request, bool set_clock);

}  // namespace ember::agent
