// emberctl: command-line client of emberd's gRPC API (ember/v1/api.proto), one subcommand
// per call. Exit codes: 0 success, 1 the call failed (the message shows the gRPC code),
// 2 bad usage or config file, 3 emberd unreachable; `run` exits with the VM's exit code.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include "ember/v1/api.grpc.pb.h"

namespace ember::ctl {
namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

constexpr char kUsage[] =
    "usage: emberctl [--socket PATH] [--json] COMMAND [args]\n"
    "\n"
    "  create [--id ID] (--config FILE | [--vcpus N] [--mem MIB] [--kernel PATH]\n"
    "         [--initrd PATH] [--boot-args ARGS])      build a VM (state CREATED)\n"
    "  start ID | pause ID | resume ID | get ID\n"
    "  stop ID [--timeout-ms N]\n"
    "  delete ID [--force]\n"
    "  list\n"
    "  watch [ID]                                       stream events until interrupted\n"
    "  metrics [ID]                                     a VM's metrics, or emberd's own\n"
    "  snapshot ID [--diff] [--dir DIR]                 snapshot a PAUSED VM\n"
    "  restore (--snapshot ID | --state PATH [--mem PATH]) --prefix P [--count N] [--resume]\n"
    "          [--mem-backend file|uffd] [--prefetch-working-set]\n"
    "  snapshots [VM_ID]                                the snapshots emberd keeps\n"
    "  delete-snapshot SNAPSHOT_ID                      remove a snapshot's record and files\n"
    "  rate-limit ID (--drive ID | --iface ID) [--bw-size B --bw-refill-ms MS]\n"
    "             [--ops-size N --ops-refill-ms MS]\n"
    "  console ID [--follow]                            the VM's serial output\n"
    "  run [create flags] [--rm]                        create + start + follow the console;\n"
    "                                                   exits with the VM's exit code\n"
    "\n"
    "  --socket PATH   emberd's socket (default $EMBER_SOCKET or /run/ember/emberd.sock)\n"
    "  --json          print responses as JSON\n"
    "\n"
    "Exit codes: 0 ok, 1 the call failed, 2 bad usage, 3 emberd unreachable.\n";

[[noreturn]] void UsageError(const std::string& message) {
  std::fprintf(stderr, "emberctl: %s (see emberctl --help)\n", message.c_str());
  std::exit(kExitUsage);
}

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;  // --name value, or --name "" for switches
};

// Switches take no value; every other --option takes one.
Args ParseArgs(const std::vector<std::string>& argv, const std::vector<std::string>& switches) {
  Args args;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    if (arg.rfind("--", 0) == 0) {
      std::string name = arg.substr(2);
      if (std::find(switches.begin(), switches.end(), name) != switches.end()) {
        args.options[name] = "";
      } else {
        if (i + 1 >= argv.size()) UsageError(arg + " needs a value");
        args.options[name] = argv[++i];
      }
    } else {
      args.positional.push_back(arg);
    }
  }
  return args;
}

std::uint64_t ParseNumber(const std::string& name, const std::string& text) {
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    UsageError("--" + name + ": \"" + text + "\" is not a whole number");
  }
  return value;
}

class Client {
 public:
  Client(const std::string& socket, bool json)
      : stub_(v1::Ember::NewStub(grpc::CreateChannel("unix:" + socket,
                                                     grpc::InsecureChannelCredentials()))),
        socket_(socket),
        json_(json) {}

  v1::Ember::Stub& stub() { return *stub_; }
  bool json() const { return json_; }

  // Prints the error the way a user reads it and returns the exit code for it.
  int Fail(const grpc::Status& status) const {
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
      std::fprintf(stderr, "emberctl: cannot reach emberd at %s: %s\n", socket_.c_str(),
                   status.error_message().c_str());
      return kExitUnreachable;
    }
    std::fprintf(stderr, "emberctl: %s: %s\n", CodeName(status.error_code()),
                 status.error_message().c_str());
    return kExitFailed;
  }

  static const char* CodeName(grpc::StatusCode code) {
    switch (code) {
      case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
      case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
      case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
      case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
      case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
      case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
      case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
      case grpc::StatusCode::INTERNAL: return "INTERNAL";
      default: return "ERROR";
    }
  }

  void PrintJson(const google::protobuf::Message& message) const {
    std::string out;
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    options.always_print_primitive_fields = true;
    (void)google::protobuf::util::MessageToJsonString(message, &out, options);
    std::printf("%s\n", out.c_str());
  }

  // A ListResponse or RestoreResponse: JSON whole, or one line per VM.
  template <typename Response>
  void PrintVms(const Response& response) const {
    if (json_) return PrintJson(response);
    for (const v1::Vm& vm : response.vms()) PrintVm(vm);
  }

  void PrintVm(const v1::Vm& vm) const {
    if (json_) return PrintJson(vm);
    std::printf("%-24s %-8s pid %-8d boot %8.3f ms", vm.vm_id().c_str(),
                v1::Vm::State_Name(vm.state()).c_str(), vm.pid(),
                static_cast<double>(vm.boot_time_us()) / 1000.0);
    if (vm.state() == v1::Vm::STOPPED) {
      std::printf("  exit %d: %s", vm.exit().exit_code(), vm.exit().reason().c_str());
    }
    std::printf("\n");
  }

 private:
  std::unique_ptr<v1::Ember::Stub> stub_;
  std::string socket_;
  bool json_;
};

std::unique_ptr<grpc::ClientContext> Context(int seconds = 60) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return context;
}

v1::VmConfig ConfigFromArgs(const Args& args) {
  v1::VmConfig config;
  if (auto it = args.options.find("config"); it != args.options.end()) {
    std::ifstream in(it->second);
    if (!in) UsageError("--config: cannot read \"" + it->second + "\"");
    std::stringstream text;
    text << in.rdbuf();
    google::protobuf::util::JsonParseOptions options;
    if (auto status = google::protobuf::util::JsonStringToMessage(text.str(), &config, options);
        !status.ok()) {
      UsageError("--config " + it->second + ": " + std::string(status.message()));
    }
  }
  auto get = [&](const char* name) -> const std::string* {
    auto it = args.options.find(name);
    return it == args.options.end() ? nullptr : &it->second;
  };
  if (auto* v = get("vcpus")) {
    config.mutable_machine_config()->set_vcpu_count(
        static_cast<std::uint32_t>(ParseNumber("vcpus", *v)));
  }
  if (auto* v = get("mem")) {
    config.mutable_machine_config()->set_mem_size_mib(
        static_cast<std::uint32_t>(ParseNumber("mem", *v)));
  }
  if (auto* v = get("kernel")) config.mutable_boot_source()->set_kernel_image_path(*v);
  if (auto* v = get("initrd")) config.mutable_boot_source()->set_initrd_path(*v);
  if (auto* v = get("boot-args")) config.mutable_boot_source()->set_boot_args(*v);
  return config;
}

std::string RequireId(const Args& args, const char* command) {
  if (args.positional.empty()) UsageError(std::string(command) + " needs a VM id");
  return args.positional[0];
}

// Streams the console to stdout until the VM stops (follow) or the output ends.
grpc::Status StreamConsole(Client& client, const std::string& id, bool follow,
                           grpc::ClientContext* context) {
  v1::StreamConsoleRequest request;
  request.set_vm_id(id);
  request.set_follow(follow);
  auto reader = client.stub().StreamConsole(context, request);
  v1::ConsoleChunk chunk;
  while (reader->Read(&chunk)) {
    std::fwrite(chunk.data().data(), 1, chunk.data().size(), stdout);
    std::fflush(stdout);
  }
  return reader->Finish();
}

int Run(Client& client, const std::string& command, const Args& args) {
  grpc::Status status;
  auto vm_call = [&](auto method, const std::string& id) {
    v1::VmRequest request;
    request.set_vm_id(id);
    v1::Vm vm;
    auto context = Context();
    status = (client.stub().*method)(context.get(), request, &vm);
    if (!status.ok()) return client.Fail(status);
    client.PrintVm(vm);
    return 0;
  };

  if (command == "create" || command == "run") {
    v1::CreateRequest request;
    if (auto it = args.options.find("id"); it != args.options.end()) request.set_vm_id(it->second);
    *request.mutable_config() = ConfigFromArgs(args);
    v1::Vm vm;
    status = client.stub().Create(Context().get(), request, &vm);
    if (!status.ok()) return client.Fail(status);
    if (command == "create") {
      client.PrintVm(vm);
      return 0;
    }
    std::string id = vm.vm_id();
    v1::VmRequest start;
    start.set_vm_id(id);
    status = client.stub().Start(Context().get(), start, &vm);
    if (!status.ok()) return client.Fail(status);
    std::fprintf(stderr, "emberctl: VM %s running (Ctrl-C stops it)\n", id.c_str());
    grpc::ClientContext console_context;
    // Ctrl-C: stop the VM; the console stream then ends on its own.
    std::thread signals([&] {
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGINT);
      sigaddset(&set, SIGTERM);
      sigaddset(&set, SIGUSR1);  // from us: the VM ended, nothing to stop
      int sig = 0;
      sigwait(&set, &sig);
      if (sig == SIGUSR1) return;
      v1::StopRequest stop;
      stop.set_vm_id(id);
      v1::Vm stopped;
      (void)client.stub().Stop(Context().get(), stop, &stopped);
    });
    status = StreamConsole(client, id, true, &console_context);
    v1::VmRequest get;
    get.set_vm_id(id);
    grpc::Status got = client.stub().Get(Context().get(), get, &vm);
    ::pthread_kill(signals.native_handle(), SIGUSR1);
    signals.join();
    if (!got.ok()) return client.Fail(got);
    if (client.json()) client.PrintJson(vm);
    std::fprintf(stderr, "emberctl: VM %s ended: %s (exit code %d)\n", id.c_str(),
                 vm.exit().reason().c_str(), vm.exit().exit_code());
    if (args.options.count("rm") != 0) {
      v1::DeleteRequest del;
      del.set_vm_id(id);
      v1::DeleteResponse response;
      (void)client.stub().Delete(Context().get(), del, &response);
    }
    return vm.exit().exit_code() < 0 ? kExitFailed : vm.exit().exit_code();
  }
  if (command == "start") return vm_call(&v1::Ember::Stub::Start, RequireId(args, "start"));
  if (command == "pause") return vm_call(&v1::Ember::Stub::Pause, RequireId(args, "pause"));
  if (command == "resume") return vm_call(&v1::Ember::Stub::Resume, RequireId(args, "resume"));
  if (command == "get") return vm_call(&v1::Ember::Stub::Get, RequireId(args, "get"));
  if (command == "stop") {
    v1::StopRequest request;
    request.set_vm_id(RequireId(args, "stop"));
    if (auto it = args.options.find("timeout-ms"); it != args.options.end()) {
      request.set_timeout_ms(static_cast<std::uint32_t>(ParseNumber("timeout-ms", it->second)));
    }
    v1::Vm vm;
    status = client.stub().Stop(Context().get(), request, &vm);
    if (!status.ok()) return client.Fail(status);
    client.PrintVm(vm);
    return 0;
  }
  if (command == "delete") {
    v1::DeleteRequest request;
    request.set_vm_id(RequireId(args, "delete"));
    request.set_force(args.options.count("force") != 0);
    v1::DeleteResponse response;
    status = client.stub().Delete(Context().get(), request, &response);
    if (!status.ok()) return client.Fail(status);
    if (client.json()) client.PrintJson(response);
    return 0;
  }
  if (command == "list") {
    v1::ListResponse response;
    status = client.stub().List(Context().get(), v1::ListRequest(), &response);
    if (!status.ok()) return client.Fail(status);
    client.PrintVms(response);
    return 0;
  }
  if (command == "watch") {
    v1::WatchEventsRequest request;
    if (!args.positional.empty()) request.set_vm_id(args.positional[0]);
    request.set_initial_state(true);
    grpc::ClientContext context;
    auto reader = client.stub().WatchEvents(&context, request);
    v1::Event event;
    while (reader->Read(&event)) {
      if (client.json()) {
        client.PrintJson(event);
      } else {
        std::printf("%-24s %-7s", event.vm_id().c_str(), v1::Event::Kind_Name(event.kind()).c_str());
        if (event.kind() == v1::Event::STATE) std::printf(" %s", v1::Vm::State_Name(event.state()).c_str());
        if (event.kind() == v1::Event::BOOTED) std::printf(" %.3f ms", static_cast<double>(event.boot_time_us()) / 1000.0);
        if (event.kind() == v1::Event::EXITED) std::printf(" code %d: %s", event.exit().exit_code(), event.exit().reason().c_str());
        std::printf("\n");
      }
      std::fflush(stdout);
    }
    status = reader->Finish();
    return status.ok() ? 0 : client.Fail(status);
  }
  if (command == "metrics") {
    v1::GetMetricsRequest request;
    if (!args.positional.empty()) request.set_vm_id(args.positional[0]);
    v1::GetMetricsResponse response;
    status = client.stub().GetMetrics(Context().get(), request, &response);
    if (!status.ok()) return client.Fail(status);
    std::printf("%s\n", response.json().c_str());
    return 0;
  }
  if (command == "snapshot") {
    v1::CreateSnapshotRequest request;
    request.set_vm_id(RequireId(args, "snapshot"));
    if (args.options.count("diff") != 0) request.set_type(v1::CreateSnapshotRequest::DIFF);
    if (auto it = args.options.find("dir"); it != args.options.end()) request.set_snapshot_dir(it->second);
    v1::Snapshot response;
    status = client.stub().CreateSnapshot(Context().get(), request, &response);
    if (!status.ok()) return client.Fail(status);
    client.PrintJson(response);
    return 0;
  }
  if (command == "restore") {
    v1::RestoreRequest request;
    if (auto it = args.options.find("snapshot"); it != args.options.end()) request.set_snapshot_id(it->second);
    if (auto it = args.options.find("state"); it != args.options.end()) request.set_state_path(it->second);
    if (auto it = args.options.find("mem"); it != args.options.end()) request.set_memory_path(it->second);
    if (auto it = args.options.find("prefix"); it != args.options.end()) request.set_vm_id_prefix(it->second);
    if (auto it = args.options.find("count"); it != args.options.end()) {
      request.set_count(static_cast<std::uint32_t>(ParseNumber("count", it->second)));
    }
    request.set_resume(args.options.count("resume") != 0);
    if (auto it = args.options.find("mem-backend"); it != args.options.end()) {
      if (it->second == "file") {
        request.set_memory_backend(v1::RestoreRequest::FILE);
      } else if (it->second == "uffd") {
        request.set_memory_backend(v1::RestoreRequest::UFFD);
      } else {
        UsageError("--mem-backend: \"" + it->second + "\" is not file or uffd");
      }
    }
    request.set_prefetch_working_set(args.options.count("prefetch-working-set") != 0);
    v1::RestoreResponse response;
    status = client.stub().Restore(Context().get(), request, &response);
    if (!status.ok()) return client.Fail(status);
    client.PrintVms(response);
    return 0;
  }
  if (command == "snapshots") {
    v1::ListSnapshotsRequest request;
    if (!args.positional.empty()) request.set_vm_id(args.positional[0]);
    v1::ListSnapshotsResponse response;
    status = client.stub().ListSnapshots(Context().get(), request, &response);
    if (!status.ok()) return client.Fail(status);
    if (client.json()) {
      client.PrintJson(response);
      return 0;
    }
    for (const v1::Snapshot& snapshot : response.snapshots()) {
      std::printf("%-40s %-4s vm %-24s %s", snapshot.snapshot_id().c_str(),
                  v1::CreateSnapshotRequest::Type_Name(snapshot.type()).c_str(),
                  snapshot.vm_id().c_str(), snapshot.state_path().c_str());
      if (!snapshot.base_snapshot_id().empty()) {
        std::printf("  base %s", snapshot.base_snapshot_id().c_str());
      }
      std::printf("\n");
    }
    return 0;
  }
  if (command == "delete-snapshot") {
    if (args.positional.empty()) UsageError("delete-snapshot needs a snapshot id");
    v1::DeleteSnapshotRequest request;
    request.set_snapshot_id(args.positional[0]);
    v1::DeleteSnapshotResponse response;
    status = client.stub().DeleteSnapshot(Context().get(), request, &response);
    if (!status.ok()) return client.Fail(status);
    if (client.json()) client.PrintJson(response);
    return 0;
  }
  if (command == "rate-limit") {
    v1::UpdateRateLimitsRequest request;
    request.set_vm_id(RequireId(args, "rate-limit"));
    v1::RateLimiter limiter;
    auto number = [&](const char* name) -> std::uint64_t {
      auto it = args.options.find(name);
      return it == args.options.end() ? 0 : ParseNumber(name, it->second);
    };
    limiter.mutable_bandwidth()->set_size(number("bw-size"));
    limiter.mutable_bandwidth()->set_refill_time(number("bw-refill-ms"));
    limiter.mutable_ops()->set_size(number("ops-size"));
    limiter.mutable_ops()->set_refill_time(number("ops-refill-ms"));
    if (auto it = args.options.find("drive"); it != args.options.end()) {
      auto* drive = request.add_drives();
      drive->set_drive_id(it->second);
      *drive->mutable_rate_limiter() = limiter;
    }
    if (auto it = args.options.find("iface"); it != args.options.end()) {
      auto* iface = request.add_interfaces();
      iface->set_iface_id(it->second);
      *iface->mutable_rx_rate_limiter() = limiter;
      *iface->mutable_tx_rate_limiter() = limiter;
    }
    v1::UpdateRateLimitsResponse response;
    status = client.stub().UpdateRateLimits(Context().get(), request, &response);
    return status.ok() ? 0 : client.Fail(status);
  }
  if (command == "console") {
    grpc::ClientContext context;
    status = StreamConsole(client, RequireId(args, "console"), args.options.count("follow") != 0,
                           &context);
    return status.ok() ? 0 : client.Fail(status);
  }
  UsageError("unknown command \"" + command + "\"");
}

int Main(int argc, char** argv) {
  // `run` and `watch` take Ctrl-C on a thread of their own.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  std::string socket = std::getenv("EMBER_SOCKET") != nullptr ? std::getenv("EMBER_SOCKET")
                                                              : "/run/ember/emberd.sock";
  bool json = false;
  int i = 1;
  for (; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (arg == "--json") {
      json = true;
    } else if (arg == "--socket") {
      if (i + 1 >= argc) UsageError("--socket needs a value");
      socket = argv[++i];
    } else {
      break;
    }
  }
  if (i >= argc) UsageError("no command");
  std::string command = argv[i];
  if (command == "run") pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::vector<std::string> rest(argv + i + 1, argv + argc);
  Args args =
      ParseArgs(rest, {"force", "diff", "follow", "resume", "rm", "json", "prefetch-working-set"});
  if (args.options.count("json") != 0) json = true;
  Client client(socket, json);
  return Run(client, command, args);
}

}  // namespace
}  // namespace ember::ctl

int main(int argc, char** argv) { return ember::ctl::Main(argc, argv); }
