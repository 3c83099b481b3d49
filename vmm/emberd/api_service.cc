#include "vmm/emberd/api_service.h"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <set>
#include <thread>

#include "vmm/base/clock.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"
#include "vmm/emberd/restore_plan.h"
#include "vmm/rules/vm_config_rules.h"

namespace ember::emberd {
namespace {

constexpr std::size_t kMaxVmIdLength = 64;
constexpr std::size_t kMaxSnapshotIdLength = 128;
constexpr std::uint32_t kMaxClones = 64;
constexpr std::uint32_t kMaxStopTimeoutMs = 60'000;
constexpr std::size_t kMaxConsoleChunk = 64 * 1024;

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status Invalid(const std::string& field, const std::string& problem) {
  return absl::InvalidArgumentError(field + ": " + problem);
}

absl::Status ValidateHostPath(const std::string& field, const std::string& path,
                              bool required) {
  if (path.empty()) return required ? Invalid(field, "is required") : absl::OkStatus();
  if (path.front() != '/') return Invalid(field, "must be an absolute path, got \"" + path + "\"");
  if (path.find('\0') != std::string::npos) return Invalid(field, "contains a NUL byte");
  return absl::OkStatus();
}

// Function VMs and their snapshots have ids starting with this (functions/deployer.cc:
// "fn-<function>-deploy"; functions/clone.cc: "fn-<function>-<seq>-<n>"). They are the Functions
// service's alone: an id a client took there could block a deploy or be taken for a function's
// leftover and removed at start-up, and a function's clone or snapshot changed behind the
// Functions service's back breaks its invocations. Reading them (Get, List, events, metrics,
// console) is fine.
constexpr char kFunctionPrefix[] = "fn-";

bool IsFunctions(const std::string& id) { return id.rfind(kFunctionPrefix, 0) == 0; }

// For an id a request asks a new VM to have.
absl::Status RefuseFunctionVmId(const std::string& field, const std::string& id) {
  if (!IsFunctions(id)) return absl::OkStatus();
  return Invalid(field, "ids starting with \"" + std::string(kFunctionPrefix) +
                            "\" are reserved for function VMs, got \"" + id + "\"");
}

// For a request that would change an existing VM or snapshot.
absl::Status RefuseFunctions(const std::string& what, const std::string& id) {
  if (!IsFunctions(id)) return absl::OkStatus();
  return absl::PermissionDeniedError(
      what + " \"" + id + "\" is a function's (its id starts with \"" + kFunctionPrefix +
      "\"): the Functions service manages it (Invoke, UpdateFunction, DeleteFunction)");
}

}  // namespace

absl::Status ValidateVmId(const std::string& field, const std::string& vm_id, bool allow_empty) {
  if (vm_id.empty()) return allow_empty ? absl::OkStatus() : Invalid(field, "is required");
  if (vm_id.size() > kMaxVmIdLength) {
    return Invalid(field, "at most 64 characters, got " + std::to_string(vm_id.size()));
  }
  if (!std::isalnum(static_cast<unsigned char>(vm_id[0]))) {
    return Invalid(field, "must start with a letter or digit, got \"" + vm_id + "\"");
  }
  for (char c : vm_id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
      return Invalid(field, "only [A-Za-z0-9_-] allowed, got \"" + vm_id + "\"");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateConfig(const v1::VmConfig& config) {
  // The rules every VM config follows (ember-vmm's own), named as the request spells them.
  if (absl::Status status = rules::CheckVmConfig(config); !status.ok()) {
    return absl::Status(status.code(), "config." + std::string(status.message()));
  }
  // emberd's own: every host path absolute.
  const auto& boot = config.boot_source();
  if (auto s = ValidateHostPath("config.boot-source.kernel_image_path", boot.kernel_image_path(),
                                false);
      !s.ok()) {
    return s;
  }
  if (auto s = ValidateHostPath("config.boot-source.initrd_path", boot.initrd_path(), false);
      !s.ok()) {
    return s;
  }
  for (int i = 0; i < config.drives_size(); ++i) {
    std::string field = "config.drives[" + std::to_string(i) + "].path_on_host";
    if (auto s = ValidateHostPath(field, config.drives(i).path_on_host(), true); !s.ok()) {
      return s;
    }
  }
  if (auto s = ValidateHostPath("config.logger.log_path", config.logger().log_path(), false);
      !s.ok()) {
    return s;
  }
  return ValidateHostPath("config.metrics.metrics_path", config.metrics().metrics_path(), false);
}

absl::Status CheckConfigPaths(const base::PathRules& paths, const v1::VmConfig& config) {
  EMBER_RETURN_IF_ERROR(
      paths.Check("config.boot-source.kernel_image_path", config.boot_source().kernel_image_path()));
  EMBER_RETURN_IF_ERROR(
      paths.Check("config.boot-source.initrd_path", config.boot_source().initrd_path()));
  for (int i = 0; i < config.drives_size(); ++i) {
    EMBER_RETURN_IF_ERROR(paths.Check("config.drives[" + std::to_string(i) + "].path_on_host",
                                      config.drives(i).path_on_host()));
  }
  EMBER_RETURN_IF_ERROR(paths.Check("config.vsock.uds_path", config.vsock().uds_path()));
  EMBER_RETURN_IF_ERROR(paths.Check("config.logger.log_path", config.logger().log_path()));
  return paths.Check("config.metrics.metrics_path", config.metrics().metrics_path());
}

absl::Status CheckRestorePaths(const base::PathRules& paths,
                               const v1::RestoreRequest& request) {
  EMBER_RETURN_IF_ERROR(paths.Check("state_path", request.state_path()));
  // The memory file an empty memory_path implies (beside the state file) passes the same rule:
  // a "memory" symlink there would otherwise lead the restore out of the allowed directories.
  EMBER_RETURN_IF_ERROR(paths.Check(
      request.memory_path().empty() && !request.state_path().empty()
          ? "memory_path (empty: the file \"memory\" beside state_path)"
          : "memory_path",
      RequestedMemoryPath(request)));
  for (int i = 0; i < request.overrides_size(); ++i) {
    const std::string where = "overrides[" + std::to_string(i) + "]";
    const v1::RestoreOverrides& overrides = request.overrides(i);
    EMBER_RETURN_IF_ERROR(paths.Check(where + ".vsock_uds_path", overrides.vsock_uds_path()));
    for (const auto& [id, path] : overrides.drive_path_on_host()) {
      EMBER_RETURN_IF_ERROR(paths.Check(where + ".drive_path_on_host[" + id + "]", path));
    }
  }
  return absl::OkStatus();
}

grpc::Status ApiService::Create(grpc::ServerContext*, const v1::CreateRequest* request,
                                v1::Vm* response) {
  if (auto s = ValidateVmId("vm_id", request->vm_id(), true); !s.ok()) return ToGrpc(s);
  if (auto s = RefuseFunctionVmId("vm_id", request->vm_id()); !s.ok()) return ToGrpc(s);
  if (!request->has_config()) return ToGrpc(Invalid("config", "is required"));
  if (auto s = ValidateConfig(request->config()); !s.ok()) return ToGrpc(s);
  if (auto s = CheckConfigPaths(paths_, request->config()); !s.ok()) return ToGrpc(s);
  auto vm = manager_.CreateVm(request->vm_id(), request->config());
  if (!vm.ok()) return ToGrpc(vm.status());
  *response = std::move(*vm);
  return grpc::Status::OK;
}

// `changes`: the call changes the VM, which a function's VM is not for the Ember API to do.
#define EMBER_VM_CALL(changes, call)                                                   \
  do {                                                                                 \
    if (auto s = ValidateVmId("vm_id", request->vm_id()); !s.ok()) return ToGrpc(s);   \
    if (changes) {                                                                     \
      if (auto s = RefuseFunctions("VM", request->vm_id()); !s.ok()) return ToGrpc(s); \
    }                                                                                  \
    auto vm = (call);                                                                  \
    if (!vm.ok()) return ToGrpc(vm.status());                                          \
    *response = std::move(*vm);                                                        \
    return grpc::Status::OK;                                                           \
  } while (false)

grpc::Status ApiService::Start(grpc::ServerContext*, const v1::VmRequest* request,
                               v1::Vm* response) {
  std::uint64_t now = base::MonotonicMicros();
  EMBER_VM_CALL(true, manager_.Start(request->vm_id(), now));
}

grpc::Status ApiService::Pause(grpc::ServerContext*, const v1::VmRequest* request,
                               v1::Vm* response) {
  EMBER_VM_CALL(true, manager_.Pause(request->vm_id()));
}

grpc::Status ApiService::Resume(grpc::ServerContext*, const v1::VmRequest* request,
                                v1::Vm* response) {
  EMBER_VM_CALL(true, manager_.Resume(request->vm_id()));
}

grpc::Status ApiService::Get(grpc::ServerContext*, const v1::VmRequest* request,
                             v1::Vm* response) {
  EMBER_VM_CALL(false, manager_.Get(request->vm_id()));
}

grpc::Status ApiService::Stop(grpc::ServerContext*, const v1::StopRequest* request,
                              v1::Vm* response) {
  if (request->timeout_ms() > kMaxStopTimeoutMs) {
    return ToGrpc(Invalid("timeout_ms", "at most 60000, got " +
                                            std::to_string(request->timeout_ms())));
  }
  auto timeout = std::chrono::milliseconds(request->timeout_ms() == 0 ? 5000
                                                                      : request->timeout_ms());
  EMBER_VM_CALL(true, manager_.Stop(request->vm_id(), timeout));
}

#undef EMBER_VM_CALL

grpc::Status ApiService::Delete(grpc::ServerContext*, const v1::DeleteRequest* request,
                                v1::DeleteResponse*) {
  if (auto s = ValidateVmId("vm_id", request->vm_id()); !s.ok()) return ToGrpc(s);
  if (auto s = RefuseFunctions("VM", request->vm_id()); !s.ok()) return ToGrpc(s);
  return ToGrpc(manager_.Delete(request->vm_id(), request->force()));
}

grpc::Status ApiService::List(grpc::ServerContext*, const v1::ListRequest*,
                              v1::ListResponse* response) {
  for (v1::Vm& vm : manager_.List()) *response->add_vms() = std::move(vm);
  return grpc::Status::OK;
}

grpc::Status ApiService::CreateSnapshot(grpc::ServerContext*,
                                        const v1::CreateSnapshotRequest* request,
                                        v1::Snapshot* response) {
  if (auto s = ValidateVmId("vm_id", request->vm_id()); !s.ok()) return ToGrpc(s);
  if (auto s = RefuseFunctions("VM", request->vm_id()); !s.ok()) return ToGrpc(s);
  if (!v1::CreateSnapshotRequest::Type_IsValid(request->type())) {
    return ToGrpc(Invalid("type", "unknown snapshot type " + std::to_string(request->type())));
  }
  if (auto s = ValidateHostPath("snapshot_dir", request->snapshot_dir(), false); !s.ok()) {
    return ToGrpc(s);
  }
  if (auto s = paths_.Check("snapshot_dir", request->snapshot_dir()); !s.ok()) return ToGrpc(s);
  auto snapshot = manager_.CreateSnapshot(*request);
  if (!snapshot.ok()) return ToGrpc(snapshot.status());
  *response = std::move(*snapshot);
  return grpc::Status::OK;
}

grpc::Status ApiService::Restore(grpc::ServerContext*, const v1::RestoreRequest* request,
                                 v1::RestoreResponse* response) {
  if (request->snapshot_id().empty() == request->state_path().empty()) {
    return ToGrpc(Invalid("snapshot_id", "exactly one of snapshot_id and state_path is required"));
  }
  if (auto s = ValidateHostPath("state_path", request->state_path(), false); !s.ok()) {
    return ToGrpc(s);
  }
  if (auto s = ValidateHostPath("memory_path", request->memory_path(), false); !s.ok()) {
    return ToGrpc(s);
  }
  if (!request->memory_path().empty() && request->state_path().empty()) {
    return ToGrpc(Invalid("memory_path", "goes with state_path (a snapshot_id names its own)"));
  }
  if (auto s = ValidateVmId("vm_id_prefix", request->vm_id_prefix()); !s.ok()) return ToGrpc(s);
  if (auto s = RefuseFunctionVmId("vm_id_prefix", request->vm_id_prefix()); !s.ok()) {
    return ToGrpc(s);
  }
  // A function's snapshot holds its deployed memory (env, secrets), and a VM restored from it
  // would pin it against DeleteFunction: only the Functions API restores those.
  if (auto s = RefuseFunctions("snapshot", request->snapshot_id()); !s.ok()) return ToGrpc(s);
  if (request->vm_id_prefix().size() > kMaxVmIdLength - 6) {
    return ToGrpc(Invalid("vm_id_prefix", "at most 58 characters"));
  }
  if (request->count() > kMaxClones) {
    return ToGrpc(absl::ResourceExhaustedError("count: at most 64 clones per request, got " +
                                               std::to_string(request->count())));
  }
  std::uint32_t count = request->count() == 0 ? 1 : request->count();
  if (static_cast<std::uint32_t>(request->overrides_size()) > count) {
    return ToGrpc(Invalid("overrides", "more entries (" +
                                           std::to_string(request->overrides_size()) +
                                           ") than clones (" + std::to_string(count) + ")"));
  }
  for (int i = 0; i < request->overrides_size(); ++i) {
    if (auto s = ValidateHostPath("overrides[" + std::to_string(i) + "].vsock_uds_path",
                                  request->overrides(i).vsock_uds_path(), false);
        !s.ok()) {
      return ToGrpc(s);
    }
  }
  if (!v1::RestoreRequest::MemoryBackend_IsValid(request->memory_backend())) {
    return ToGrpc(Invalid("memory_backend", "unknown memory backend " +
                                                std::to_string(request->memory_backend())));
  }
  if (request->prefetch_working_set() && request->memory_backend() != v1::RestoreRequest::UFFD) {
    return ToGrpc(Invalid("prefetch_working_set",
                          "needs memory_backend UFFD (the FILE backend has no page server to "
                          "prefetch with)"));
  }
  if (auto s = CheckRestorePaths(paths_, *request); !s.ok()) return ToGrpc(s);
  auto restored = manager_.Restore(*request);
  if (!restored.ok()) return ToGrpc(restored.status());
  *response = std::move(*restored);
  return grpc::Status::OK;
}

grpc::Status ApiService::ListSnapshots(grpc::ServerContext*,
                                       const v1::ListSnapshotsRequest* request,
                                       v1::ListSnapshotsResponse* response) {
  if (auto s = ValidateVmId("vm_id", request->vm_id(), true); !s.ok()) return ToGrpc(s);
  for (v1::Snapshot& snapshot : manager_.ListSnapshots(request->vm_id())) {
    *response->add_snapshots() = std::move(snapshot);
  }
  return grpc::Status::OK;
}

namespace {

// emberd's snapshot ids are a vm_id, a timestamp and maybe a counter: the vm_id rules, longer.
absl::Status ValidateSnapshotId(const std::string& id) {
  if (id.empty()) return Invalid("snapshot_id", "is required");
  if (id.size() > kMaxSnapshotIdLength) {
    return Invalid("snapshot_id", "at most 128 characters, got " + std::to_string(id.size()));
  }
  bool well_formed = std::isalnum(static_cast<unsigned char>(id[0])) != 0;
  for (char c : id) {
    well_formed = well_formed && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' ||
                                  c == '_');
  }
  if (!well_formed) {
    return Invalid("snapshot_id", "[A-Za-z0-9_-], first one alphanumeric, got \"" + id + "\"");
  }
  return absl::OkStatus();
}

}  // namespace

grpc::Status ApiService::DeleteSnapshot(grpc::ServerContext*,
                                        const v1::DeleteSnapshotRequest* request,
                                        v1::DeleteSnapshotResponse*) {
  if (auto s = ValidateSnapshotId(request->snapshot_id()); !s.ok()) return ToGrpc(s);
  if (auto s = RefuseFunctions("snapshot", request->snapshot_id()); !s.ok()) return ToGrpc(s);
  return ToGrpc(manager_.DeleteSnapshot(request->snapshot_id()));
}

grpc::Status ApiService::TrustSnapshot(grpc::ServerContext*,
                                       const v1::TrustSnapshotRequest* request,
                                       v1::Snapshot* response) {
  if (auto s = ValidateSnapshotId(request->snapshot_id()); !s.ok()) return ToGrpc(s);
  if (auto s = RefuseFunctions("snapshot", request->snapshot_id()); !s.ok()) return ToGrpc(s);
  auto snapshot = manager_.TrustSnapshot(request->snapshot_id());
  if (!snapshot.ok()) return ToGrpc(snapshot.status());
  *response = std::move(*snapshot);
  return grpc::Status::OK;
}

grpc::Status ApiService::WatchEvents(grpc::ServerContext* context,
                                     const v1::WatchEventsRequest* request,
                                     grpc::ServerWriter<v1::Event>* writer) {
  if (auto s = ValidateVmId("vm_id", request->vm_id(), true); !s.ok()) return ToGrpc(s);
  if (!request->vm_id().empty()) {
    if (auto vm = manager_.Get(request->vm_id()); !vm.ok()) return ToGrpc(vm.status());
  }
  auto watcher = manager_.events().Subscribe(request->vm_id());
  struct Unsubscribe {
    EventHub& hub;
    std::shared_ptr<EventHub::Watcher> watcher;
    ~Unsubscribe() { hub.Unsubscribe(watcher); }
  } unsubscribe{manager_.events(), watcher};
  if (request->initial_state()) {
    std::vector<v1::Vm> vms;
    if (request->vm_id().empty()) {
      vms = manager_.List();
    } else if (auto vm = manager_.Get(request->vm_id()); vm.ok()) {
      vms.push_back(*vm);
    }
    for (const v1::Vm& vm : vms) {
      v1::Event event;
      event.set_vm_id(vm.vm_id());
      event.set_kind(v1::Event::STATE);
      event.set_state(vm.state());
      if (!writer->Write(event)) return grpc::Status::OK;
    }
  }
  while (!context->IsCancelled()) {
    std::deque<v1::Event> batch;
    {
      std::unique_lock lock(watcher->mu);
      watcher->cv.wait_for(lock, std::chrono::milliseconds(200),
                           [&] { return !watcher->queue.empty() || watcher->overflowed; });
      if (watcher->overflowed) {
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            "the watcher fell more than 10000 events behind");
      }
      batch.swap(watcher->queue);
    }
    for (const v1::Event& event : batch) {
      if (!writer->Write(event)) return grpc::Status::OK;
    }
  }
  return grpc::Status::OK;
}

grpc::Status ApiService::GetMetrics(grpc::ServerContext*, const v1::GetMetricsRequest* request,
                                    v1::GetMetricsResponse* response) {
  if (request->vm_id().empty()) {
    response->set_json(manager_.OwnMetrics());
    return grpc::Status::OK;
  }
  if (auto s = ValidateVmId("vm_id", request->vm_id()); !s.ok()) return ToGrpc(s);
  auto json = manager_.VmMetrics(request->vm_id());
  if (!json.ok()) return ToGrpc(json.status());
  response->set_json(std::move(*json));
  return grpc::Status::OK;
}

grpc::Status ApiService::UpdateRateLimits(grpc::ServerContext*,
                                          const v1::UpdateRateLimitsRequest* request,
                                          v1::UpdateRateLimitsResponse*) {
  if (auto s = ValidateVmId("vm_id", request->vm_id()); !s.ok()) return ToGrpc(s);
  if (auto s = RefuseFunctions("VM", request->vm_id()); !s.ok()) return ToGrpc(s);
  if (request->drives_size() == 0 && request->interfaces_size() == 0) {
    return ToGrpc(Invalid("drives", "nothing to update: give drives or interfaces"));
  }
  for (int i = 0; i < request->drives_size(); ++i) {
    std::string field = "drives[" + std::to_string(i) + "]";
    if (request->drives(i).drive_id().empty()) return ToGrpc(Invalid(field + ".drive_id", "is required"));
    if (auto s = rules::CheckRateLimiter(request->drives(i).rate_limiter(),
                                         field + ".rate_limiter");
        !s.ok()) {
      return ToGrpc(s);
    }
  }
  for (int i = 0; i < request->interfaces_size(); ++i) {
    std::string field = "interfaces[" + std::to_string(i) + "]";
    const auto& iface = request->interfaces(i);
    if (iface.iface_id().empty()) return ToGrpc(Invalid(field + ".iface_id", "is required"));
    if (auto s = rules::CheckRateLimiter(iface.rx_rate_limiter(), field + ".rx_rate_limiter");
        !s.ok()) {
      return ToGrpc(s);
    }
    if (auto s = rules::CheckRateLimiter(iface.tx_rate_limiter(), field + ".tx_rate_limiter");
        !s.ok()) {
      return ToGrpc(s);
    }
  }
  return ToGrpc(manager_.UpdateRateLimits(*request));
}

grpc::Status ApiService::UpdateDrive(grpc::ServerContext*, const v1::UpdateDriveRequest* request,
                                     v1::Vm* response) {
  if (auto s = ValidateVmId("vm_id", request->vm_id()); !s.ok()) return ToGrpc(s);
  if (auto s = RefuseFunctions("VM", request->vm_id()); !s.ok()) return ToGrpc(s);
  if (request->drive_id().empty()) return ToGrpc(Invalid("drive_id", "is required"));
  if (request->path_on_host().empty()) return ToGrpc(Invalid("path_on_host", "is required"));
  // The API's rules first: the VmManager opens with the VMMs' wider ones, which also admit the
  // function images in emberd's state directory that no request may name.
  if (auto s = paths_.Check("path_on_host", request->path_on_host()); !s.ok()) return ToGrpc(s);
  auto vm = manager_.UpdateDrive(*request);
  if (!vm.ok()) return ToGrpc(vm.status());
  *response = std::move(*vm);
  return grpc::Status::OK;
}

grpc::Status ApiService::StreamConsole(grpc::ServerContext* context,
                                       const v1::StreamConsoleRequest* request,
                                       grpc::ServerWriter<v1::ConsoleChunk>* writer) {
  if (auto s = ValidateVmId("vm_id", request->vm_id()); !s.ok()) return ToGrpc(s);
  auto ended = manager_.ConsoleEnded(request->vm_id());
  if (!ended.ok()) return ToGrpc(ended.status());
  std::uint64_t offset = request->offset();
  base::UniqueFd fd;
  std::string buf(kMaxConsoleChunk, '\0');
  while (!context->IsCancelled()) {
    if (!fd) {
      // Not there yet is no error: the VMM makes it when it starts.
      absl::StatusOr<base::UniqueFd> opened = manager_.OpenConsole(request->vm_id());
      if (opened.ok()) {
        fd = std::move(*opened);
      } else if (opened.status().code() != absl::StatusCode::kNotFound) {
        return ToGrpc(opened.status());
      }
    }
    ssize_t n = fd ? ::pread(fd.Get(), buf.data(), buf.size(), static_cast<off_t>(offset)) : 0;
    if (n > 0) {
      v1::ConsoleChunk chunk;
      chunk.set_offset(offset);
      chunk.set_data(buf.data(), static_cast<std::size_t>(n));
      offset += static_cast<std::uint64_t>(n);
      if (!writer->Write(chunk)) return grpc::Status::OK;
      continue;
    }
    // At the end of what is there: done unless following a VM that may still write.
    if (!request->follow()) break;
    auto now = manager_.ConsoleEnded(request->vm_id());
    if (!now.ok() || *ended) break;
    ended = std::move(now);  // re-read once more after it stops, then end
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return grpc::Status::OK;
}

}  // namespace ember::emberd
