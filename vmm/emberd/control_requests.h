#pragma once

#include "absl/status/statusor.h"
#include "ember/v1/api.pb.h"
#include "ember/v1/vmm_control.pb.h"
#include "vmm/emberd/vmm_view.h"

namespace ember::emberd {

// API requests as the control-channel requests ember-vmm takes.

// The update for an API UpdateRateLimits on a VM with `config`: NOT_FOUND naming the field for
// a drive or interface the VM does not have.
[[nodiscard]] absl::StatusOr<v1::ControlRequest::UpdateRateLimits> RateLimitUpdate(
    const v1::UpdateRateLimitsRequest& request, const v1::VmConfig& config);

// Writing `snapshot` to the files as the VMM sees them (`target`).
[[nodiscard]] v1::ControlRequest SnapshotRequest(const v1::Snapshot& snapshot,
                                                 const VmmView::SnapshotFiles& target);

}  // namespace ember::emberd
