#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ember::emberd {

// emberd's own metrics (GetMetrics without a vm_id) as JSON: the counts its caller gives and
// what /proc says of this process (RSS, fds, threads).
[[nodiscard]] std::string SelfMetricsJson(std::int64_t unix_ms, std::size_t vms,
                                          std::size_t live_vms, std::size_t watchers);

}  // namespace ember::emberd
