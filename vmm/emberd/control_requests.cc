#include "vmm/emberd/control_requests.h"

#include <string>

namespace ember::emberd {

absl::StatusOr<v1::ControlRequest::UpdateRateLimits> RateLimitUpdate(
    const v1::UpdateRateLimitsRequest& request, const v1::VmConfig& config) {
  v1::ControlRequest::UpdateRateLimits update;
  const std::string vm = "VM \"" + request.vm_id() + "\"";
  for (int i = 0; i < request.drives_size(); ++i) {
    const auto& drive = request.drives(i);
    bool known = false;
    for (const auto& d : config.drives()) known = known || d.drive_id() == drive.drive_id();
    if (!known) {
      return absl::NotFoundError("drives[" + std::to_string(i) + "].drive_id: " + vm +
                                 " has no drive \"" + drive.drive_id() + "\"");
    }
    auto* out = update.add_drives();
    out->set_drive_id(drive.drive_id());
    *out->mutable_rate_limiter() = drive.rate_limiter();
  }
  for (int i = 0; i < request.interfaces_size(); ++i) {
    const auto& iface = request.interfaces(i);
    bool known = false;
    for (const auto& n : config.network_interfaces()) {
      known = known || n.iface_id() == iface.iface_id();
    }
    if (!known) {
      return absl::NotFoundError("interfaces[" + std::to_string(i) + "].iface_id: " + vm +
                                 " has no interface \"" + iface.iface_id() + "\"");
    }
    auto* out = update.add_interfaces();
    out->set_iface_id(iface.iface_id());
    *out->mutable_rx_rate_limiter() = iface.rx_rate_limiter();
    *out->mutable_tx_rate_limiter() = iface.tx_rate_limiter();
  }
  return update;
}

v1::ControlRequest SnapshotRequest(const v1::Snapshot& snapshot,
                                   const VmmView::SnapshotFiles& target) {
  v1::ControlRequest request;
  request.mutable_create_snapshot()->set_diff(snapshot.type() ==
                                              v1::CreateSnapshotRequest::DIFF);
  request.mutable_create_snapshot()->set_state_path(target.state);
  request.mutable_create_snapshot()->set_memory_path(target.memory);
  request.mutable_create_snapshot()->set_no_sync(target.scratch);
  return request;
}

}  // namespace ember::emberd
