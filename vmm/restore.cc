#include "vmm/restore.h"

#include "snapshot/memory_file.h"
#include "snapshot/state_file.h"
#include "vmm/base/status.h"
#include "vmm/vm_config.h"

namespace ember::vmm {

absl::Status PrepareRestore(const std::string& state_path, const std::string& memory_path,
                            const RestoreOverrides& overrides, VmmOptions* options) {
  EMBER_ASSIGN_OR_RETURN(v1::SnapshotState state, snapshot::ReadStateFile(state_path));
  EMBER_RETURN_IF_ERROR(snapshot::CheckMemoryFile(memory_path, state.memory_file_size()));
  for (const std::string& base : state.base_memory_files()) {
    EMBER_RETURN_IF_ERROR(snapshot::CheckMemoryFile(base, state.memory_file_size()));
  }
  if (state.vcpus_size() == 0 || state.memory_size() == 0) {
    return absl::InvalidArgumentError("snapshot state file " + state_path +
                                      " describes no vCPUs or no memory");
  }
  v1::VmConfig config = state.config();
  for (const auto& [id, path] : overrides.drive_paths) {
    bool found = false;
    for (v1::Drive& drive : *config.mutable_drives()) {
      if (drive.drive_id() == id) {
        drive.set_path_on_host(path);
        found = true;
      }
    }
    if (!found) {
      return absl::InvalidArgumentError("drive override: the snapshot has no drive \"" + id + "\"");
    }
  }
  for (const auto& [id, backend] : overrides.interfaces) {
    bool found = false;
    for (v1::NetworkInterface& ni : *config.mutable_network_interfaces()) {
      if (ni.iface_id() == id) {
        ni.set_host_dev_name(backend.host_dev_name);
        if (!backend.guest_mac.empty()) ni.set_guest_mac(backend.guest_mac);
        found = true;
      }
    }
    if (!found) {
      return absl::InvalidArgumentError("net override: the snapshot has no network interface \"" +
                                        id + "\"");
    }
  }
  if (overrides.vsock_uds_path) {
    if (!config.has_vsock()) {
      return absl::InvalidArgumentError("vsock override: the snapshot has no vsock device");
    }
    config.mutable_vsock()->set_uds_path(*overrides.vsock_uds_path);
  }
  EMBER_RETURN_IF_ERROR(ValidateVmConfig(config));
  options->config = std::move(config);
  options->restore = RestoreSource{std::move(state), memory_path};
  return absl::OkStatus();
}

}  // namespace ember::vmm
