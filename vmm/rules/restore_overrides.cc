#include "vmm/rules/restore_overrides.h"

namespace ember::rules {

absl::Status ApplyRestoreOverrides(const v1::RestoreOverrides& overrides,
                                   const std::string& where, UnknownDevices unknown,
                                   v1::VmConfig* config) {
  const bool refuse = unknown == UnknownDevices::kRefuse;
  auto missing = [&](const std::string& field, const std::string& what) {
    return absl::InvalidArgumentError(where + "." + field + ": the snapshot has no " + what);
  };
  for (const auto& [id, path] : overrides.drive_path_on_host()) {
    bool found = false;
    for (v1::Drive& drive : *config->mutable_drives()) {
      if (drive.drive_id() != id) continue;
      drive.set_path_on_host(path);
      found = true;
    }
    if (!found && refuse) return missing("drive_path_on_host", "drive \"" + id + "\"");
  }
  auto interface = [&](const std::string& id) -> v1::NetworkInterface* {
    for (v1::NetworkInterface& ni : *config->mutable_network_interfaces()) {
      if (ni.iface_id() == id) return &ni;
    }
    return nullptr;
  };
  for (const auto& [id, tap] : overrides.iface_host_dev_name()) {
    v1::NetworkInterface* ni = interface(id);
    if (ni != nullptr) {
      ni->set_host_dev_name(tap);
    } else if (refuse) {
      return missing("iface_host_dev_name", "network interface \"" + id + "\"");
    }
  }
  for (const auto& [id, mac] : overrides.iface_guest_mac()) {
    v1::NetworkInterface* ni = interface(id);
    if (ni != nullptr) {
      ni->set_guest_mac(mac);
    } else if (refuse) {
      return missing("iface_guest_mac", "network interface \"" + id + "\"");
    }
  }
  if (!overrides.vsock_uds_path().empty()) {
    if (!config->has_vsock() && refuse) return missing("vsock_uds_path", "vsock device");
    config->mutable_vsock()->set_uds_path(overrides.vsock_uds_path());
  }
  // A state file is untrusted input: the files a VM writes to are its restorer's choice,
  // never its writer's (a crafted one would have a root VMM append its log to, or replace
  // with metrics, any file it names).
  if (config->has_logger()) config->mutable_logger()->clear_log_path();
  if (config->has_metrics()) config->mutable_metrics()->clear_metrics_path();
  return absl::OkStatus();
}

}  // namespace ember::rules
