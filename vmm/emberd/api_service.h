#pragma once

#include "ember/v1/api.grpc.pb.h"
#include "vmm/base/path_rules.h"
#include "vmm/emberd/vm_manager.h"

namespace ember::emberd {

// The gRPC face of emberd: validates each request (INVALID_ARGUMENT naming the field) and
// hands it to the VmManager. Every host path a request names must pass `paths` (emberd
// --allow-dir). Called on gRPC's threads; `manager` and `paths` outlive it.
class ApiService final : public v1::Ember::Service {
 public:
  ApiService(VmManager& manager, const base::PathRules& paths) : manager_(manager), paths_(paths) {}

  grpc::Status Create(grpc::ServerContext*, const v1::CreateRequest*, v1::Vm*) override;
  grpc::Status Start(grpc::ServerContext*, const v1::VmRequest*, v1::Vm*) override;
  grpc::Status Pause(grpc::ServerContext*, const v1::VmRequest*, v1::Vm*) override;
  grpc::Status Resume(grpc::ServerContext*, const v1::VmRequest*, v1::Vm*) override;
  grpc::Status CreateSnapshot(grpc::ServerContext*, const v1::CreateSnapshotRequest*,
                              v1::Snapshot*) override;
  grpc::Status Restore(grpc::ServerContext*, const v1::RestoreRequest*,
                       v1::RestoreResponse*) override;
  grpc::Status ListSnapshots(grpc::ServerContext*, const v1::ListSnapshotsRequest*,
                             v1::ListSnapshotsResponse*) override;
  grpc::Status DeleteSnapshot(grpc::ServerContext*, const v1::DeleteSnapshotRequest*,
                              v1::DeleteSnapshotResponse*) override;
  grpc::Status TrustSnapshot(grpc::ServerContext*, const v1::TrustSnapshotRequest* request,
                             v1::Snapshot* response) override;
  grpc::Status Stop(grpc::ServerContext*, const v1::StopRequest*, v1::Vm*) override;
  grpc::Status Delete(grpc::ServerContext*, const v1::DeleteRequest*,
                      v1::DeleteResponse*) override;
  grpc::Status Get(grpc::ServerContext*, const v1::VmRequest*, v1::Vm*) override;
  grpc::Status List(grpc::ServerContext*, const v1::ListRequest*, v1::ListResponse*) override;
  grpc::Status WatchEvents(grpc::ServerContext*, const v1::WatchEventsRequest*,
                           grpc::ServerWriter<v1::Event>*) override;
  grpc::Status GetMetrics(grpc::ServerContext*, const v1::GetMetricsRequest*,
                          v1::GetMetricsResponse*) override;
  grpc::Status UpdateRateLimits(grpc::ServerContext*, const v1::UpdateRateLimitsRequest*,
                                v1::UpdateRateLimitsResponse*) override;
  grpc::Status UpdateDrive(grpc::ServerContext*, const v1::UpdateDriveRequest*,
                           v1::Vm*) override;
  grpc::Status StreamConsole(grpc::ServerContext*, const v1::StreamConsoleRequest*,
                             grpc::ServerWriter<v1::ConsoleChunk>*) override;

 private:
  VmManager& manager_;
  const base::PathRules& paths_;
};

// Request checks, exposed for unit tests. Each returns INVALID_ARGUMENT naming the field.
[[nodiscard]] absl::Status ValidateVmId(const std::string& field, const std::string& vm_id,
                                        bool allow_empty = false);
[[nodiscard]] absl::Status ValidateConfig(const v1::VmConfig& config);
// Every host path of `config` against the allowed directories (after ValidateConfig).
[[nodiscard]] absl::Status CheckConfigPaths(const base::PathRules& paths,
                                            const v1::VmConfig& config);
// Every host path a Restore request names (its files and each clone's overrides).
[[nodiscard]] absl::Status CheckRestorePaths(const base::PathRules& paths,
                                             const v1::RestoreRequest& request);

}  // namespace ember::emberd
