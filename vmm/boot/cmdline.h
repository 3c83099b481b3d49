#pragma once

#include <string>

#include "absl/status/status.h"
#include "ember/v1/vm_config.pb.h"

namespace ember::vmm {

// Boot arguments used when the config gives none: a serial console, reset through the
// i8042 on reboot (so the VM ends), and reboot on panic, as Firecracker does.
inline constexpr char kDefaultBootArgs[] = "console=ttyS0 reboot=k panic=1 pci=off";
// What the built-in test guest runs when no boot arguments say otherwise.
inline constexpr char kDefaultTestScenarios[] = "ember.test=hello";

// The kernel command line for `config`: its boot_args, or the defaults (plus the default test
// scenario when booting the built-in guest).
[[nodiscard]] std::string AssembleCmdline(const v1::VmConfig& config, bool builtin_guest);

// Fails, naming boot-source.boot_args, when `cmdline` does not fit the boot protocol's limit.
[[nodiscard]] absl::Status CheckCmdlineLength(const std::string& cmdline);

}  // namespace ember::vmm
