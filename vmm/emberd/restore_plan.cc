#include "vmm/emberd/restore_plan.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>

#include "vmm/base/status.h"

namespace ember::emberd {

std::vector<std::string> RestoreArgs(const RestorePlan& plan, const v1::VmConfig& config) {
  std::vector<std::string> args = {"--restore-from", plan.state_path, "--restore-mem",
                                   plan.memory_path};
  if (plan.uffd) {
    // The working set is <memory>.ws, beside the memory file (ember-vmm's default).
    args.insert(args.end(), {"--restore-mem-backend", "uffd"});
    if (plan.prefetch) args.push_back("--prefetch-working-set");
  }
  // Sorted (std::map) so that a clone's command line is reproducible.
  std::map<std::string, std::string> drives;
  for (const auto& [id, path] : plan.overrides.drive_path_on_host()) drives[id] = path;
  for (const auto& [id, path] : drives) {
    args.push_back("--drive-override");
    args.push_back(id + "=" + path);
  }
  std::map<std::string, std::pair<std::string, std::string>> ifaces;  // id -> (tap, mac)
  for (const auto& [id, tap] : plan.overrides.iface_host_dev_name()) ifaces[id].first = tap;
  for (const auto& [id, mac] : plan.overrides.iface_guest_mac()) ifaces[id].second = mac;
  for (const v1::NetworkInterface& iface : config.network_interfaces()) {
    // A MAC alone keeps the interface's tap (config already has the overrides applied).
    auto it = ifaces.find(iface.iface_id());
    if (it != ifaces.end() && it->second.first.empty()) it->second.first = iface.host_dev_name();
  }
  for (const auto& [id, tap_mac] : ifaces) {
    // --net-override IFACE_ID=TAP[,MAC]; an empty TAP keeps the snapshot's.
    args.push_back("--net-override");
    args.push_back(id + "=" + tap_mac.first +
                   (tap_mac.second.empty() ? "" : "," + tap_mac.second));
  }
  if (!plan.overrides.vsock_uds_path().empty()) {
    args.push_back("--vsock-override");
    args.push_back(plan.overrides.vsock_uds_path());
  }
  return args;
}

absl::Status ApplyOverrides(const v1::RestoreOverrides& overrides, const std::string& where,
                            bool check, v1::VmConfig* config) {
  for (const auto& [id, path] : overrides.drive_path_on_host()) {
    if (path.empty() || path[0] != '/') {
      return absl::InvalidArgumentError(where + ".drive_path_on_host[" + id +
                                        "]: must be an absolute path");
    }
    bool found = false;
    for (v1::Drive& drive : *config->mutable_drives()) {
      if (drive.drive_id() == id) {
        drive.set_path_on_host(path);
        found = true;
      }
    }
    if (!found && check) {
      return absl::InvalidArgumentError(where + ".drive_path_on_host: the snapshot has no drive \"" +
                                        id + "\"");
    }
  }
  auto iface = [&](const std::string& id, const char* field) -> absl::StatusOr<v1::NetworkInterface*> {
    for (v1::NetworkInterface& n : *config->mutable_network_interfaces()) {
      if (n.iface_id() == id) return &n;
    }
    if (check) {
      return absl::InvalidArgumentError(where + "." + field +
                                        ": the snapshot has no network interface \"" + id + "\"");
    }
    return nullptr;
  };
  for (const auto& [id, tap] : overrides.iface_host_dev_name()) {
    EMBER_ASSIGN_OR_RETURN(v1::NetworkInterface * n, iface(id, "iface_host_dev_name"));
    if (n != nullptr) n->set_host_dev_name(tap);
  }
  for (const auto& [id, mac] : overrides.iface_guest_mac()) {
    EMBER_ASSIGN_OR_RETURN(v1::NetworkInterface * n, iface(id, "iface_guest_mac"));
    if (n != nullptr) n->set_guest_mac(mac);
  }
  if (!overrides.vsock_uds_path().empty()) {
    if (check && !config->has_vsock()) {
      return absl::InvalidArgumentError(where + ".vsock_uds_path: the snapshot has no vsock");
    }
    config->mutable_vsock()->set_uds_path(overrides.vsock_uds_path());
  }
  return absl::OkStatus();
}

absl::StatusOr<RestorePlan> PlanRestore(const v1::RestoreRequest& request,
                                        const SnapshotCatalog& catalog) {
  // Where the snapshot is, and the configuration of the VM it was taken from (emberd's
  // record; a state_path emberd did not write may have none).
  RestorePlan plan;
  if (!request.snapshot_id().empty()) {
    EMBER_ASSIGN_OR_RETURN(v1::Snapshot snapshot, catalog.Get(request.snapshot_id()));
    plan.diff = snapshot.type() == v1::CreateSnapshotRequest::DIFF;
    plan.state_path = snapshot.state_path();
    plan.memory_path = snapshot.memory_path();
    plan.restored_from = request.snapshot_id();
    plan.snapshot_id = request.snapshot_id();
    plan.record_dir = catalog.RecordDir(request.snapshot_id());
  } else {
    plan.state_path = request.state_path();
    const std::string beside = std::filesystem::path(request.state_path()).parent_path();
    plan.memory_path = request.memory_path().empty() ? beside + "/memory" : request.memory_path();
    plan.restored_from = request.state_path();
    // One of emberd's own snapshots, restored by its path: the clones' DIFF snapshots
    // apply onto it all the same.
    plan.snapshot_id = catalog.FindByFiles(plan.state_path, plan.memory_path);
    // Only emberd's own record: what a file in the caller's directory says would decide
    // which host files a clone is given (its drives, a jail's links).
    if (!plan.snapshot_id.empty()) plan.record_dir = catalog.RecordDir(plan.snapshot_id);
  }
  plan.uffd = request.memory_backend() == v1::RestoreRequest::UFFD;
  plan.prefetch = request.prefetch_working_set();
  return plan;
}

absl::Status CheckRestoreFiles(const v1::RestoreRequest& request, const RestorePlan& plan) {
  if (plan.uffd && plan.diff) {
    return absl::FailedPreconditionError(
        "memory_backend: UFFD restores FULL snapshots only, and snapshot \"" +
        request.snapshot_id() + "\" is a DIFF; use FILE, or fold it into a full snapshot "
        "(ember-snapshot merge)");
  }
  if (plan.prefetch && ::access((plan.memory_path + ".ws").c_str(), R_OK) != 0) {
    return absl::FailedPreconditionError(
        "prefetch_working_set: no working set recorded for " + plan.memory_path + " (" +
        plan.memory_path + ".ws: " + std::strerror(errno) +
        "); a UFFD restore without prefetch_working_set records one when its VM ends");
  }
  const std::string field = request.snapshot_id().empty() ? "state_path" : "snapshot_id";
  for (const std::string& path : {plan.state_path, plan.memory_path}) {
    if (::access(path.c_str(), R_OK) != 0) {
      return absl::NotFoundError(field + ": cannot read " + path + ": " + std::strerror(errno));
    }
  }
  return absl::OkStatus();
}

}  // namespace ember::emberd
