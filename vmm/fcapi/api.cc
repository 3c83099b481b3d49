#include "vmm/fcapi/api.h"

#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/util/json_util.h>

#include "vmm/base/drive_file.h"
#include "vmm/base/status.h"
#include "ember/v1/vmm_control.pb.h"
#include "vmm/base/atomic_file.h"
#include "vmm/fcapi/fc_api.pb.h"
#include "vmm/fcapi/firecracker_names.h"
#include "vmm/rules/vm_config_rules.h"

namespace ember::fcapi {
namespace {

constexpr int kCallTimeoutMs = 10'000;
constexpr int kSnapshotTimeoutMs = 300'000;  // writing a large guest's memory takes a while

HttpResponse Fault(std::string_view message, int status = 400) {
  return {status, FaultBody(message)};
}

HttpResponse NoContent() { return {204, ""}; }

// Ember's device set is deliberately virtio-net, -blk and -vsock on virtio-mmio.
HttpResponse Unsupported(std::string_view what) {
  return Fault(std::string(what) +
               " is not supported by Ember: its devices are virtio-net, virtio-blk and "
               "virtio-vsock only");
}

HttpResponse PreBootOnly(std::string_view call) {
  return Fault(std::string(call) +
               " configures the microVM before it starts; it has already started");
}

HttpResponse NeedsStarted(std::string_view call) {
  return Fault(std::string(call) +
               " needs a started microVM: call InstanceStart or load a snapshot first");
}

// A machine configuration as Firecracker's GET calls show it: every number filled in, the CPU
// template only when one is set (Firecracker's "None" and Ember's default "host" mean none) and
// huge_pages "None", not empty. Typed clients (the Go SDK's and the Rust crates' models) read
// those two as enums and fail on "".
v1::MachineConfig AsFirecrackerShows(const v1::VmConfig& config) {
  v1::MachineConfig machine = config.machine_config();
  machine.set_vcpu_count(rules::VcpuCountOf(config));
  machine.set_mem_size_mib(rules::MemMibOf(config));
  if (machine.cpu_template().empty() || machine.cpu_template() == "None" ||
      machine.cpu_template() == "host") {
    machine.clear_cpu_template();
  }
  if (machine.huge_pages().empty()) machine.set_huge_pages("None");
  return machine;
}

HttpResponse FromStatus(const absl::Status& status) {
  return Fault(status.message().empty() ? absl::StatusCodeToString(status.code())
                                        : std::string(status.message()));
}

// The name of a string field of `message` (searched through nested messages) that holds a NUL
// character, or empty. JSON's "\u0000" parses into one; no path, id or argument may hold it.
std::string FieldWithNul(const google::protobuf::Message& message) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* reflection = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const FieldDescriptor* field : fields) {
    int count = field->is_repeated() ? reflection->FieldSize(message, field) : 1;
    for (int i = 0; i < count; ++i) {
      if (field->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
        std::string text = field->is_repeated() ? reflection->GetRepeatedString(message, field, i)
                                                : reflection->GetString(message, field);
        if (text.find('\0') != std::string::npos) return field->json_name();
      } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        const google::protobuf::Message& inner =
            field->is_repeated() ? reflection->GetRepeatedMessage(message, field, i)
                                 : reflection->GetMessage(message, field);
        if (std::string name = FieldWithNul(inner); !name.empty()) {
          return field->json_name() + "." + name;
        }
      }
    }
  }
  return {};
}

// Reads `body` into `message` with protobuf's JSON parser: unknown fields and wrong types are
// errors, as in Firecracker (its bodies deny unknown fields).
absl::Status ParseBody(const std::string& body, google::protobuf::Message* message) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(body, message, options);
  if (status.ok()) {
    if (std::string field = FieldWithNul(*message); !field.empty()) {
      return absl::InvalidArgumentError(field + " holds a NUL character");
    }
    return absl::OkStatus();
  }
  std::string text(status.message());
  for (char& c : text) {
    if (c == '\n') c = ' ';
  }
  return absl::InvalidArgumentError("cannot parse the request body as " +
                                    message->GetDescriptor()->name() + ": " + text);
}

// Firecracker's rule for the ids in paths: letters, digits and '_'.
std::string CheckResourceId(std::string_view id) {
  if (id.empty()) return "the id in the path is empty";
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_';
    if (!ok) return "the id \"" + std::string(id) + "\" may hold only letters, digits and '_'";
  }
  return {};
}

const char* StateName(bool started, bool paused) {
  if (!started) return "Not started";
  return paused ? "Paused" : "Running";
}

bool IsRegularFile(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

}  // namespace

// PUT /drives/{id} and /network-interfaces/{id}: the body's id must be the path's; a device
// of that id is replaced, otherwise one is added.
template <typename Device, typename IdOf>
HttpResponse FirecrackerApi::PutDevice(std::string_view id, const std::string& body,
                                       std::string_view id_field,
                                       google::protobuf::RepeatedPtrField<Device>* devices,
                                       IdOf id_of) {
  if (auto error = CheckResourceId(id); !error.empty()) return Fault(error);
  Device device;
  if (auto status = ParseBody(body, &device); !status.ok()) return FromStatus(status);
  if (id_of(device) != id) {
    return Fault("the " + std::string(id_field) + " in the body (\"" + id_of(device) +
                 "\") is not the id in the path (\"" + std::string(id) + "\")");
  }
  configured_ = true;
  for (Device& existing : *devices) {
    if (id_of(existing) == id) {
      existing = std::move(device);
      return NoContent();
    }
  }
  *devices->Add() = std::move(device);
  return NoContent();
}

HttpResponse FirecrackerApi::Invalid(std::string_view method) const {
  return Fault("invalid request method and/or path: " + std::string(method) + " " + path_);
}

HttpResponse FirecrackerApi::Json(const google::protobuf::Message& message) const {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string json;
  auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) return Fault("cannot write the response: " + std::string(status.message()), 500);
  return {200, json};
}

HttpResponse FirecrackerApi::Handle(const HttpRequest& request) {
  ++requests_;
  Tokens path;
  std::string_view rest = request.path;
  while (!rest.empty()) {
    std::size_t slash = rest.find('/');
    std::string_view token = rest.substr(0, slash);
    if (!token.empty()) path.push_back(token);
    rest = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
  }
  path_ = request.path;
  HttpResponse response = Route(request, path);
  if (response.status >= 400) ++failed_requests_;
  return response;
}

HttpResponse FirecrackerApi::Route(const HttpRequest& request, const Tokens& path) {
  bool has_body = !request.body.empty();
  if (request.method == "GET") {
    if (has_body) return Fault("a GET request takes no body");
    return Get(path);
  }
  if (request.method == "PUT" || request.method == "PATCH") {
    if (!has_body) return Fault("the " + request.method + " request has no body");
    return request.method == "PUT" ? Put(path, request.body) : Patch(path, request.body);
  }
  return Fault("invalid request method and/or path: " + request.method + " " + request.path);
}

HttpResponse FirecrackerApi::Get(const Tokens& path) {
  std::string_view resource = path.empty() ? "" : path[0];
  if (resource.empty()) {
    InstanceInfo info;
    info.set_id(options_.id);
    info.set_state(StateName(state_ != State::kNotStarted, state_ == State::kPaused));
    info.set_vmm_version(kFirecrackerApiVersion);
    info.set_app_name("Ember");
    return Json(info);
  }
  if (resource == "version" && path.size() == 1) {
    VersionInfo version;
    version.set_firecracker_version(kFirecrackerApiVersion);
    return Json(version);
  }
  if (resource == "machine-config" && path.size() == 1) {
    return Json(AsFirecrackerShows(config_));
  }
  if (resource == "vm" && path.size() == 2 && path[1] == "config") {
    v1::VmConfig shown = config_;
    *shown.mutable_machine_config() = AsFirecrackerShows(config_);
    return Json(shown);
  }
  if (resource == "balloon") return Unsupported("A balloon device");
  if (resource == "mmds") return Unsupported("MMDS (the microVM metadata service)");
  if (resource == "hotplug") return Unsupported("Memory hotplug");
  return Invalid("GET");
}

HttpResponse FirecrackerApi::Put(const Tokens& path, const std::string& body) {
  std::string_view resource = path.empty() ? "" : path[0];
  std::string_view id = path.size() > 1 ? path[1] : "";
  if (resource == "actions" && path.size() == 1) return PutAction(body);
  if (resource == "snapshot" && path.size() == 2 && path[1] == "create") {
    return CreateSnapshot(body);
  }
  if (resource == "snapshot" && path.size() == 2 && path[1] == "load") return LoadSnapshot(body);
  if (resource == "balloon") return Unsupported("A balloon device");
  if (resource == "entropy") return Unsupported("An entropy (virtio-rng) device");
  if (resource == "mmds") return Unsupported("MMDS (the microVM metadata service)");
  if (resource == "cpu-config") {
    return Fault("custom CPU templates are not supported by Ember: the guest sees the host's "
                 "CPU model (machine-config cpu_template \"host\")");
  }
  if (resource == "pmem") return Unsupported("A pmem device");
  if (resource == "hotplug") return Unsupported("Memory hotplug");
  if (resource == "vhost-user-devices" || resource == "vfio") return Unsupported("Device passthrough");

  // The boot resources: before InstanceStart only.
  bool boot_resource = resource == "boot-source" || resource == "drives" ||
                       resource == "network-interfaces" || resource == "machine-config" ||
                       resource == "vsock" || resource == "logger" || resource == "metrics" ||
                       resource == "serial";
  if (!boot_resource) {
    return Invalid("PUT");
  }
  if (state_ != State::kNotStarted) return PreBootOnly("PUT /" + std::string(resource));
  bool takes_id = resource == "drives" || resource == "network-interfaces";
  if (path.size() != (takes_id ? 2u : 1u)) {
    return Invalid("PUT");
  }
  return Checked([&] { return PutBootResource(resource, id, body); });
}

HttpResponse FirecrackerApi::Checked(const std::function<HttpResponse()>& change) {
  // Firecracker refuses a whole update with a bad value: the config is checked by Ember's
  // rules (the ones ember-vmm and emberd apply) after each change, and a refused change undone.
  v1::VmConfig before = config_;
  HttpResponse response = change();
  if (response.status != 204) return response;
  if (auto status = rules::CheckVmConfig(config_); !status.ok()) {
    config_ = std::move(before);
    return FromStatus(status);
  }
  return response;
}

HttpResponse FirecrackerApi::PutBootResource(std::string_view resource, std::string_view id,
                                             const std::string& body) {
  if (resource == "drives") return PutDrive(id, body);
  if (resource == "network-interfaces") return PutInterface(id, body);
  if (resource == "machine-config") return PutMachineConfig(body, false);
  absl::Status parsed;
  if (resource == "boot-source") {
    v1::BootSource boot;
    parsed = ParseBody(body, &boot);
    if (parsed.ok()) *config_.mutable_boot_source() = std::move(boot);
  } else if (resource == "vsock") {
    v1::Vsock vsock;
    parsed = ParseBody(body, &vsock);
    if (parsed.ok()) *config_.mutable_vsock() = std::move(vsock);
  } else if (resource == "logger") {
    v1::Logger logger;
    parsed = ParseBody(body, &logger);
    if (parsed.ok()) *config_.mutable_logger() = std::move(logger);
  } else if (resource == "metrics") {
    v1::Metrics metrics;
    parsed = ParseBody(body, &metrics);
    if (parsed.ok()) *config_.mutable_metrics() = std::move(metrics);
  } else {
    SerialConfig serial;
    parsed = ParseBody(body, &serial);
    if (parsed.ok()) serial_out_ = serial.serial_out_path();
  }
  if (!parsed.ok()) return FromStatus(parsed);
  configured_ = true;
  return NoContent();
}

HttpResponse FirecrackerApi::Patch(const Tokens& path, const std::string& body) {
  std::string_view resource = path.empty() ? "" : path[0];
  std::string_view id = path.size() > 1 ? path[1] : "";
  if (resource == "machine-config" && path.size() == 1) {
    if (state_ != State::kNotStarted) return PreBootOnly("PATCH /machine-config");
    return Checked([&] { return PutMachineConfig(body, true); });
  }
  if (resource == "vm" && path.size() == 1) return PatchVm(body);
  if (resource == "drives" && path.size() == 2) return PatchDrive(id, body);
  if (resource == "network-interfaces" && path.size() == 2) return PatchInterface(id, body);
  if (resource == "balloon") return Unsupported("A balloon device");
  if (resource == "mmds") return Unsupported("MMDS (the microVM metadata service)");
  if (resource == "pmem") return Unsupported("A pmem device");
  if (resource == "hotplug") return Unsupported("Memory hotplug");
  return Invalid("PATCH");
}

HttpResponse FirecrackerApi::PutDrive(std::string_view id, const std::string& body) {
  return PutDevice(id, body, "drive_id", config_.mutable_drives(),
                   [](const v1::Drive& drive) -> const std::string& { return drive.drive_id(); });
}

HttpResponse FirecrackerApi::PutInterface(std::string_view id, const std::string& body) {
  return PutDevice(id, body, "iface_id", config_.mutable_network_interfaces(),
                   [](const v1::NetworkInterface& iface) -> const std::string& {
                     return iface.iface_id();
                   });
}

HttpResponse FirecrackerApi::PutMachineConfig(const std::string& body, bool patch) {
  v1::MachineConfig machine;
  if (auto status = ParseBody(body, &machine); !status.ok()) return FromStatus(status);
  if (patch) {
    config_.mutable_machine_config()->MergeFrom(machine);
  } else {
    if (!machine.has_vcpu_count() || !machine.has_mem_size_mib()) {
      return Fault("PUT /machine-config needs vcpu_count and mem_size_mib (PATCH changes some "
                   "fields only)");
    }
    *config_.mutable_machine_config() = std::move(machine);
  }
  configured_ = true;
  return NoContent();
}

HttpResponse FirecrackerApi::PutAction(const std::string& body) {
  InstanceActionInfo action;
  if (auto status = ParseBody(body, &action); !status.ok()) return FromStatus(status);
  const std::string& type = action.action_type();
  if (type == "InstanceStart") {
    if (state_ != State::kNotStarted) return Fault("InstanceStart: the microVM has already started");
    return InstanceStart();
  }
  if (type == "FlushMetrics") return FlushMetrics();
  if (type == "SendCtrlAltDel") {
    if (state_ == State::kNotStarted) return NeedsStarted("SendCtrlAltDel");
    v1::ControlRequest request;
    request.mutable_send_ctrl_alt_del();
    if (auto response = vmm_->Call(std::move(request), kCallTimeoutMs); !response.ok()) {
      return FromStatus(response.status());
    }
    return NoContent();
  }
  return Fault("unknown action_type \"" + type +
               "\": InstanceStart, SendCtrlAltDel or FlushMetrics");
}

absl::Status FirecrackerApi::StartVmm(std::vector<std::string> args, const v1::VmConfig* config) {
  if (!serial_out_.empty()) args.insert(args.end(), {"--serial-out", serial_out_});
  if (!options_.metrics_path.empty()) {
    args.insert(args.end(), {"--metrics-path", options_.metrics_path});
  }
  args.insert(args.end(), options_.vmm_args.begin(), options_.vmm_args.end());
  EMBER_ASSIGN_OR_RETURN(vmm_, VmmProcess::Start(std::move(args), config,
                                                 options_.private_parent, *options_.launcher));
  return absl::OkStatus();
}

absl::Status FirecrackerApi::BootFromConfig(v1::VmConfig config) {
  config_ = std::move(config);
  configured_ = true;
  HttpResponse response = InstanceStart();
  if (response.status == 204) return absl::OkStatus();
  return absl::InvalidArgumentError(response.body);
}

HttpResponse FirecrackerApi::InstanceStart() {
  if (auto status = StartVmm({}, &config_); !status.ok()) return FromStatus(status);
  v1::ControlRequest request;
  request.mutable_start();
  if (auto response = vmm_->Call(std::move(request), kCallTimeoutMs); !response.ok()) {
    vmm_.reset();
    return FromStatus(response.status());
  }
  state_ = State::kRunning;
  return NoContent();
}

HttpResponse FirecrackerApi::PatchVm(const std::string& body) {
  VmStateChange change;
  if (auto status = ParseBody(body, &change); !status.ok()) return FromStatus(status);
  if (change.state() != "Paused" && change.state() != "Resumed") {
    return Fault("unknown state \"" + change.state() + "\": Paused or Resumed");
  }
  if (state_ == State::kNotStarted) return NeedsStarted("PATCH /vm");
  bool pause = change.state() == "Paused";
  if (pause == (state_ == State::kPaused)) return NoContent();  // already there
  v1::ControlRequest request;
  if (pause) {
    request.mutable_pause();
  } else {
    request.mutable_resume();
  }
  if (auto response = vmm_->Call(std::move(request), kCallTimeoutMs); !response.ok()) {
    return FromStatus(response.status());
  }
  state_ = pause ? State::kPaused : State::kRunning;
  return NoContent();
}

HttpResponse FirecrackerApi::PatchDrive(std::string_view id, const std::string& body) {
  if (auto error = CheckResourceId(id); !error.empty()) return Fault(error);
  PartialDrive drive;
  if (auto status = ParseBody(body, &drive); !status.ok()) return FromStatus(status);
  if (drive.drive_id() != id) {
    return Fault("the drive_id in the body (\"" + drive.drive_id() +
                 "\") is not the id in the path (\"" + std::string(id) + "\")");
  }
  if (state_ == State::kNotStarted) return NeedsStarted("PATCH /drives");
  if (drive.has_path_on_host()) {
    // The swap first: a rate limiter in the same body applies only once
    // the new file is in place.
    // Opened here, as ember-vmm opened the drive's first file: the VMM's filter lets it
    // open no existing file once it runs, so the file goes to it as an fd.
    v1::Drive* configured = nullptr;
    for (v1::Drive& candidate : *config_.mutable_drives()) {
      if (candidate.drive_id() == id) configured = &candidate;
    }
    if (configured == nullptr) {
      return Fault("PATCH /drives: the microVM has no drive \"" + std::string(id) + "\"");
    }
    auto file = base::OpenDriveFile(drive.path_on_host(), configured->is_read_only(),
                                    configured->direct_io(), "drive " + std::string(id));
    if (!file.ok()) return FromStatus(file.status());
    v1::ControlRequest swap;
    swap.mutable_update_drive()->set_drive_id(std::string(id));
    swap.mutable_update_drive()->set_path(Absolute(drive.path_on_host()));
    if (auto response = vmm_->Call(std::move(swap), kCallTimeoutMs, file->Get());
        !response.ok()) {
      return FromStatus(response.status());
    }
    configured->set_path_on_host(Absolute(drive.path_on_host()));
  }
  if (!drive.has_rate_limiter()) return NoContent();
  v1::ControlRequest request;
  auto* limit = request.mutable_update_rate_limits()->add_drives();
  limit->set_drive_id(std::string(id));
  *limit->mutable_rate_limiter() = drive.rate_limiter();
  if (auto response = vmm_->Call(std::move(request), kCallTimeoutMs); !response.ok()) {
    return FromStatus(response.status());
  }
  return NoContent();
}

HttpResponse FirecrackerApi::PatchInterface(std::string_view id, const std::string& body) {
  if (auto error = CheckResourceId(id); !error.empty()) return Fault(error);
  PartialNetworkInterface iface;
  if (auto status = ParseBody(body, &iface); !status.ok()) return FromStatus(status);
  if (iface.iface_id() != id) {
    return Fault("the iface_id in the body (\"" + iface.iface_id() +
                 "\") is not the id in the path (\"" + std::string(id) + "\")");
  }
  if (state_ == State::kNotStarted) return NeedsStarted("PATCH /network-interfaces");
  v1::ControlRequest request;
  auto* limit = request.mutable_update_rate_limits()->add_interfaces();
  limit->set_iface_id(std::string(id));
  if (iface.has_rx_rate_limiter()) *limit->mutable_rx_rate_limiter() = iface.rx_rate_limiter();
  if (iface.has_tx_rate_limiter()) *limit->mutable_tx_rate_limiter() = iface.tx_rate_limiter();
  if (auto response = vmm_->Call(std::move(request), kCallTimeoutMs); !response.ok()) {
    return FromStatus(response.status());
  }
  return NoContent();
}

std::string FirecrackerApi::Absolute(const std::string& path) const {
  if (path.empty() || path[0] == '/') return path;
  char cwd[PATH_MAX];
  if (::getcwd(cwd, sizeof cwd) == nullptr) return path;
  return std::string(cwd) + "/" + path;
}

HttpResponse FirecrackerApi::CreateSnapshot(const std::string& body) {
  SnapshotCreateParams params;
  if (auto status = ParseBody(body, &params); !status.ok()) return FromStatus(status);
  const std::string& type = params.snapshot_type();
  if (!type.empty() && type != "Full" && type != "Diff") {
    return Fault("unknown snapshot_type \"" + type + "\": Full or Diff");
  }
  if (params.snapshot_path().empty() || params.mem_file_path().empty()) {
    return Fault("PUT /snapshot/create needs snapshot_path and mem_file_path");
  }
  if (state_ == State::kNotStarted) return NeedsStarted("PUT /snapshot/create");
  if (state_ != State::kPaused) {
    return Fault("PUT /snapshot/create needs a paused microVM: PATCH /vm {\"state\": \"Paused\"} "
                 "first");
  }
  v1::ControlRequest request;
  auto* create = request.mutable_create_snapshot();
  create->set_diff(type == "Diff");
  create->set_state_path(Absolute(params.snapshot_path()));
  create->set_memory_path(Absolute(params.mem_file_path()));
  if (auto response = vmm_->Call(std::move(request), kSnapshotTimeoutMs); !response.ok()) {
    return FromStatus(response.status());
  }
  return NoContent();
}

HttpResponse FirecrackerApi::LoadSnapshot(const std::string& body) {
  SnapshotLoadParams params;
  if (auto status = ParseBody(body, &params); !status.ok()) return FromStatus(status);
  bool has_backend = params.has_mem_backend();
  if (has_backend == !params.mem_file_path().empty()) {
    return Fault("PUT /snapshot/load needs exactly one of mem_backend and mem_file_path");
  }
  if (params.snapshot_path().empty()) return Fault("PUT /snapshot/load needs snapshot_path");
  std::string backend_type = has_backend ? params.mem_backend().backend_type() : "File";
  std::string memory = has_backend ? params.mem_backend().backend_path() : params.mem_file_path();
  if (backend_type != "File" && backend_type != "Uffd") {
    return Fault("unknown mem_backend.backend_type \"" + backend_type + "\": File or Uffd");
  }
  if (memory.empty()) return Fault("PUT /snapshot/load: the memory backend has no path");
  if (state_ != State::kNotStarted) return PreBootOnly("PUT /snapshot/load");
  if (configured_) {
    return Fault("PUT /snapshot/load: a snapshot cannot be loaded after boot resources were "
                 "configured");
  }
  std::vector<std::string> args = {"--restore-from", Absolute(params.snapshot_path())};
  if (backend_type == "File") {
    args.insert(args.end(), {"--restore-mem", Absolute(memory)});
  } else if (IsRegularFile(memory)) {
    // Ember's extension: a memory file as a Uffd backend is served by ember-vmm's own page
    // server thread.
    args.insert(args.end(), {"--restore-mem", Absolute(memory), "--restore-mem-backend", "uffd"});
  } else {
    // Firecracker's meaning: the socket of a page-fault handler, which gets the uffd. A path
    // with nothing there is ember-vmm's to report (it connects there).
    args.insert(args.end(), {"--restore-uffd-handler", Absolute(memory)});
  }
  for (const NetworkOverride& net : params.network_overrides()) {
    if (net.iface_id().empty() || net.host_dev_name().empty()) {
      return Fault("network_overrides: each needs iface_id and host_dev_name");
    }
    args.insert(args.end(), {"--net-override", net.iface_id() + "=" + net.host_dev_name()});
  }
  if (!params.vsock_override().uds_path().empty()) {
    args.insert(args.end(), {"--vsock-override", params.vsock_override().uds_path()});
  }
  args.insert(args.end(), options_.restore_args.begin(), options_.restore_args.end());
  // Diff-snapshot tracking (enable_diff_snapshots, track_dirty_pages) is the snapshotted VM's
  // own machine-config track_dirty_pages, which the restored VM keeps.
  if (auto status = StartVmm(std::move(args), nullptr); !status.ok()) return FromStatus(status);
  state_ = State::kPaused;  // a restored VM waits paused
  if (params.resume_vm()) {
    v1::ControlRequest request;
    request.mutable_resume();
    if (auto response = vmm_->Call(std::move(request), kCallTimeoutMs); !response.ok()) {
      return FromStatus(response.status());
    }
    state_ = State::kRunning;
  }
  return NoContent();
}

std::string FirecrackerApi::MetricsPath() const {
  return !options_.metrics_path.empty() ? options_.metrics_path
                                        : config_.metrics().metrics_path();
}

HttpResponse FirecrackerApi::FlushMetrics() {
  std::string path = MetricsPath();
  if (path.empty()) return Fault("FlushMetrics: no metrics file (PUT /metrics or --metrics-path)");
  std::string json;
  if (vmm_ != nullptr) {
    v1::ControlRequest request;
    request.mutable_get_metrics();
    auto response = vmm_->Call(std::move(request), kCallTimeoutMs);
    if (!response.ok()) return FromStatus(response.status());
    json = response->metrics_json();
  } else {
    // Before the VMM exists, the API front's own counters are all there is.
    json = "{\"api_server\":{\"requests\":" + std::to_string(requests_) +
           ",\"failed_requests\":" + std::to_string(failed_requests_) + "}}";
  }
  auto file = base::AtomicFile::Create(path, 0644);
  if (!file.ok()) return FromStatus(file.status());
  if (::write(file->fd(), json.data(), json.size()) != static_cast<ssize_t>(json.size())) {
    return Fault("FlushMetrics: cannot write \"" + path + "\"");
  }
  if (auto status = file->Commit(); !status.ok()) return FromStatus(status);
  return NoContent();
}

}  // namespace ember::fcapi
