#pragma once

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "vmm/vmm.h"

namespace ember::vmm {

// What a clone may change when restored from a shared snapshot.
struct RestoreOverrides {
  std::map<std::string, std::string> drive_paths;  // drive_id -> new path_on_host
  // A network interface's new tap and, when not empty, its new guest MAC.
  struct Interface {
    std::string host_dev_name;
    std::string guest_mac;
  };
  std::map<std::string, Interface> interfaces;  // iface_id -> new backend
  std::optional<std::string> vsock_uds_path;    // the vsock's new host socket path
};

// Checks that `state` describes what a VM built from `config` has: its RAM ranges (none in
// the MMIO gap), laid back to back in a memory file of the recorded size, and one vCPU for
// each id below its vcpu_count. InvalidArgument saying what differs otherwise.
[[nodiscard]] absl::Status CheckStateMatchesConfig(const v1::SnapshotState& state,
                                                   const v1::VmConfig& config);

// Prepares a restore: reads and verifies the state file, checks the memory file is the
// size the state expects, applies `overrides` to the saved configuration, which becomes
// options.config, and checks the state matches that (CheckStateMatchesConfig). Touches
// nothing; every problem is InvalidArgument naming the file or the override.
[[nodiscard]] absl::Status PrepareRestore(const std::string& state_path,
                                          const std::string& memory_path,
                                          const RestoreOverrides& overrides, VmmOptions* options);

}  // namespace ember::vmm
