#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/message.h>
#include <google/protobuf/repeated_ptr_field.h>

#include "absl/status/status.h"
#include "ember/v1/vm_config.pb.h"
#include "vmm/fcapi/http_connection.h"
#include "vmm/fcapi/vmm_process.h"

// Firecracker's REST API (its swagger: src/firecracker/swagger/firecracker.yaml) mapped onto
// Ember: before InstanceStart, calls build an ember.v1.VmConfig (the bodies parse with
// protobuf's JSON parser into the config file's own messages); InstanceStart or a snapshot
// load starts ember-vmm with it; after that, calls go over ember-vmm's control channel.
namespace ember::fcapi {

// What the front was started with (ember-fc-api's flags).
struct ApiOptions {
  std::string id = "anonymous-instance";
  std::string private_parent;       // where VmmProcess makes its private directory
  std::vector<std::string> vmm_args;  // passed to every ember-vmm started (log, seccomp...)
  std::vector<std::string> restore_args;  // passed to a restoring one (--allow-dir)
  std::string metrics_path;         // --metrics-path, which wins over PUT /metrics
  Launcher* launcher = nullptr;     // starts ember-vmm; outlives the API
};

// One microVM's API. Single-threaded: owned by the front's loop.
class FirecrackerApi {
 public:
  explicit FirecrackerApi(ApiOptions options) : options_(std::move(options)) {}

  // Answers one request. Never fails: every error is a Firecracker-shaped response.
  [[nodiscard]] HttpResponse Handle(const HttpRequest& request);

  // Starts the VM from `config` as InstanceStart would (Firecracker's --config-file with the
  // API on). Errors are the user's config (InvalidArgument) or the host's.
  [[nodiscard]] absl::Status BootFromConfig(v1::VmConfig config);

  // The running VMM, if any (its control connection joins the front's poll loop).
  [[nodiscard]] VmmProcess* vmm() { return vmm_.get(); }

 private:
  enum class State { kNotStarted, kRunning, kPaused };
  using Tokens = std::vector<std::string_view>;

  HttpResponse Route(const HttpRequest& request, const Tokens& path);
  HttpResponse Get(const Tokens& path);
  HttpResponse Put(const Tokens& path, const std::string& body);
  HttpResponse Patch(const Tokens& path, const std::string& body);

  // Runs `change` on config_ and keeps it only if the config still follows Ember's rules.
  HttpResponse Checked(const std::function<HttpResponse()>& change);
  HttpResponse PutBootResource(std::string_view resource, std::string_view id,
                               const std::string& body);
  HttpResponse PutAction(const std::string& body);
  HttpResponse PutDrive(std::string_view id, const std::string& body);
  HttpResponse PutInterface(std::string_view id, const std::string& body);
  template <typename Device, typename IdOf>
  HttpResponse PutDevice(std::string_view id, const std::string& body, std::string_view id_field,
                         google::protobuf::RepeatedPtrField<Device>* devices, IdOf id_of);
  HttpResponse PutMachineConfig(const std::string& body, bool patch);
  HttpResponse PatchDrive(std::string_view id, const std::string& body);
  HttpResponse PatchInterface(std::string_view id, const std::string& body);
  HttpResponse PatchVm(const std::string& body);
  HttpResponse CreateSnapshot(const std::string& body);
  HttpResponse LoadSnapshot(const std::string& body);
  HttpResponse FlushMetrics();
  HttpResponse InstanceStart();

  // Starts ember-vmm (boot with `config`, or restore with `args`); the VMM's build failure is
  // the error.
  [[nodiscard]] absl::Status StartVmm(std::vector<std::string> args, const v1::VmConfig* config);
  [[nodiscard]] std::string Absolute(const std::string& path) const;
  [[nodiscard]] std::string MetricsPath() const;
  [[nodiscard]] HttpResponse Invalid(std::string_view method) const;
  [[nodiscard]] HttpResponse Json(const google::protobuf::Message& message) const;

  ApiOptions options_;
  std::string path_;  // the request's, for messages
  State state_ = State::kNotStarted;
  v1::VmConfig config_;
  bool configured_ = false;  // a boot resource was set: a snapshot load is refused
  std::string serial_out_;   // PUT /serial
  std::unique_ptr<VmmProcess> vmm_;
  std::uint64_t requests_ = 0;
  std::uint64_t failed_requests_ = 0;
};

}  // namespace ember::fcapi
