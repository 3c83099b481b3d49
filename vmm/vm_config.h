#pragma once

#include "absl/status/status.h"
#include "ember/v1/vm_config.pb.h"
#include "vmm/rules/vm_config_rules.h"

namespace ember::vmm {

// The rules' limits, by the names ember-vmm's code has always used.
using rules::kDefaultMemMib;
using rules::kDefaultVcpus;
using rules::kMaxMemMib;
using rules::kMaxVcpus;
using rules::kMinMemMib;

// Checks a parsed config: the rules every source of configs shares (rules::CheckVmConfig),
// then what only the host can tell (CPU templates, MAC addresses, log levels, files that must
// be readable, drives sharing a writable file). Errors are one line naming the field or file.
[[nodiscard]] absl::Status ValidateVmConfig(const v1::VmConfig& config);

}  // namespace ember::vmm
