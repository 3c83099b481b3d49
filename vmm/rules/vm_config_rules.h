#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "ember/v1/vm_config.pb.h"

// The rules a VM configuration must follow, wherever it comes from: ember-vmm's --config and
// --config-proto, a state file's configuration with a clone's overrides, and emberd's API.
// Proto-only (built against lite or full messages, see CMakeLists.txt): nothing here touches
// the host. What needs the host (files that must open, a tap that must exist, CPU templates,
// MAC addresses) is ember-vmm's to check when it builds the VM.
namespace ember::rules {

// Limits on what a VM config may ask for.
inline constexpr std::uint32_t kMaxVcpus = 32;
inline constexpr std::uint32_t kMinMemMib = 16;
inline constexpr std::uint32_t kMaxMemMib = 1024 * 1024;  // 1 TiB
inline constexpr std::uint32_t kDefaultVcpus = 1;
inline constexpr std::uint32_t kDefaultMemMib = 128;
// Linux's x86 command line (COMMAND_LINE_SIZE less its NUL), Ember's own parameters included.
inline constexpr std::size_t kMaxCmdlineBytes = 2047;

// What a VM built from `config` has, defaults applied.
[[nodiscard]] std::uint32_t VcpuCountOf(const v1::VmConfig& config);
[[nodiscard]] std::uint32_t MemMibOf(const v1::VmConfig& config);

// Whether `id` can name a drive, interface or vsock: 1-64 letters, digits, '_' or '-'.
[[nodiscard]] bool ValidDeviceId(const std::string& id);

// A rate limiter's buckets by the one rule for every source of limits
// (virtio::ValidateTokenBucket). Errors name `field` and the member, e.g.
// "drives[0].rate_limiter.bandwidth.refill_time: ...".
[[nodiscard]] absl::Status CheckTokenBucket(const v1::TokenBucket& bucket,
                                            const std::string& field);
[[nodiscard]] absl::Status CheckRateLimiter(const v1::RateLimiter& limiter,
                                            const std::string& field);

// Checks everything in `config` that can be judged without the host: what Ember does not
// support (CheckFirecrackerFeatures), ranges, ids, names, duplicates, one root drive, rate
// limits, the length of the vsock's socket path. OK or
// INVALID_ARGUMENT "<field>: <problem>", the field spelt as the config file spells it, e.g.
// "drives[1].io_engine: \"Fast\" is not Async or Sync". Any thread.
[[nodiscard]] absl::Status CheckVmConfig(const v1::VmConfig& config);

}  // namespace ember::rules
