#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "ember/v1/vm_config.pb.h"

namespace ember::vmm {

// Limits on what a VM config may ask for.
constexpr std::uint32_t kMaxVcpus = 32;
constexpr std::uint32_t kMinMemMib = 16;
constexpr std::uint32_t kMaxMemMib = 1024 * 1024;  // 1 TiB
constexpr std::uint32_t kDefaultVcpus = 1;
constexpr std::uint32_t kDefaultMemMib = 128;

// Checks the values a parsed config holds (ranges, supported features, files that must be
// readable). Errors are one line naming the field or file.
[[nodiscard]] absl::Status ValidateVmConfig(const v1::VmConfig& config);

}  // namespace ember::vmm
