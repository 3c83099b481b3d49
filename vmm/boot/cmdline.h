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

// The kernel command line for `config`, as Firecracker builds it: the boot_args (or the
// defaults, plus the default test scenario for the built-in guest), then the root device
// when a drive is marked is_root_device (it is always the first virtio-blk device, vda),
// then the VMM's `device_tokens` announcing its virtio-mmio devices.
[[nodiscard]] std::string AssembleCmdline(const v1::VmConfig& config, bool builtin_guest,
                                          const std::string& device_tokens);

// Fails, naming boot-source.boot_args, when `cmdline` does not fit the boot protocol's limit.
[[nodiscard]] absl::Status CheckCmdlineLength(const std::string& cmdline);

}  // namespace ember::vmm
