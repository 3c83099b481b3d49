#pragma once

#include "absl/status/status.h"
#include "ember/v1/vm_config.pb.h"

namespace ember::vmm {

// Checks a parsed config: the rules every source of configs shares (rules::CheckVmConfig),
// then what only the host can tell (CPU templates, MAC addresses, log levels, files that must
// be readable, drives sharing a writable file). Errors are one line naming the field or file.
[[nodiscard]] absl::Status ValidateVmConfig(const v1::VmConfig& config);

}  // namespace ember::vmm
