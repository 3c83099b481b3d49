#pragma once

#include <string>

#include "absl/status/status.h"
#include "ember/v1/vm_config.pb.h"

namespace ember::rules {

// Whether every device an override names must be in the configuration. emberd may not know
// a snapshot's configuration (a state file it did not write): it then applies what it can
// and leaves the check to ember-vmm, which always knows.
enum class UnknownDevices { kRefuse, kIgnore };

// Turns `config`, a snapshotted VM's configuration, into its clone's: `overrides` replace the
// named drives' files, interfaces' taps and MACs and the vsock's socket path, and the
// snapshot's log and metrics paths are dropped (a restored VM logs where its restorer says,
// never where a state file says). Errors are INVALID_ARGUMENT naming `where` and the field,
// e.g. "overrides[0].drive_path_on_host: the snapshot has no drive \"data\""; `config` may
// then be partly changed. Any thread.
[[nodiscard]] absl::Status ApplyRestoreOverrides(const v1::RestoreOverrides& overrides,
                                                 const std::string& where,
                                                 UnknownDevices unknown, v1::VmConfig* config);

}  // namespace ember::rules
