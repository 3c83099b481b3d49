#include "vmm/emberctl/commands.h"
#include "vmm/emberctl/fn_commands.h"

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <google/protobuf/util/json_util.h>

namespace ember::ctl {
namespace {

v1::VmConfig ConfigFromArgs(const Args& args) {
  v1::VmConfig config;
  if (const std::string* path = args.Find("config")) {
    std::ifstream in(*path);
    if (!in) UsageError("--config: cannot read \"" + *path + "\"");
    std::stringstream text;
    text << in.rdbuf();
    google::protobuf::util::JsonParseOptions options;
    if (auto status = google::protobuf::util::JsonStringToMessage(text.str(), &config, options);
        !status.ok()) {
      UsageError("--config " + *path + ": " + std::string(status.message()));
    }
  }
  if (const std::string* v = args.Find("vcpus")) {
    config.mutable_machine_config()->set_vcpu_count(
        static_cast<std::uint32_t>(ParseNumber("vcpus", *v)));
  }
  if (const std::string* v = args.Find("mem")) {
    config.mutable_machine_config()->set_mem_size_mib(
        static_cast<std::uint32_t>(ParseNumber("mem", *v)));
  }
  if (const std::string* v = args.Find("kernel")) {
    config.mutable_boot_source()->set_kernel_image_path(*v);
  }
  if (const std::string* v = args.Find("initrd")) config.mutable_boot_source()->set_initrd_path(*v);
  if (const std::string* v = args.Find("boot-args")) {
    config.mutable_boot_source()->set_boot_args(*v);
  }
  return config;
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

// One of the calls that take a VM id and answer with the VM (start, pause, resume, get).
template <auto method>
int VmCall(Client& client, const Args& args, const char* command) {
  v1::VmRequest request;
  request.set_vm_id(RequireId(args, command));
  v1::Vm vm;
  auto context = Context();
  grpc::Status status = (client.stub().*method)(context.get(), request, &vm);
  if (!status.ok()) return client.Fail(status);
  client.PrintVm(vm);
  return 0;
}

int Start(Client& client, const Args& args) {
  return VmCall<&v1::Ember::Stub::Start>(client, args, "start");
}
int Pause(Client& client, const Args& args) {
  return VmCall<&v1::Ember::Stub::Pause>(client, args, "pause");
}
int Resume(Client& client, const Args& args) {
  return VmCall<&v1::Ember::Stub::Resume>(client, args, "resume");
}
int Get(Client& client, const Args& args) {
  return VmCall<&v1::Ember::Stub::Get>(client, args, "get");
}

// Creates the VM the flags describe into `vm`; 0 or the exit code of the failure.
int CreateVm(Client& client, const Args& args, v1::Vm& vm) {
  v1::CreateRequest request;
  if (const std::string* id = args.Find("id")) request.set_vm_id(*id);
  *request.mutable_config() = ConfigFromArgs(args);
  grpc::Status status = client.stub().Create(Context().get(), request, &vm);
  return status.ok() ? 0 : client.Fail(status);
}

int Create(Client& client, const Args& args) {
  v1::Vm vm;
  if (int code = CreateVm(client, args, vm); code != 0) return code;
  client.PrintVm(vm);
  return 0;
}

// create + start + follow the console; Ctrl-C stops the VM. Exits with the VM's exit code.
int RunVm(Client& client, const Args& args) {
  v1::Vm vm;
  if (int code = CreateVm(client, args, vm); code != 0) return code;
  std::string id = vm.vm_id();
  v1::VmRequest start;
  start.set_vm_id(id);
  grpc::Status status = client.stub().Start(Context().get(), start, &vm);
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
  if (args.Has("rm")) {
    v1::DeleteRequest del;
    del.set_vm_id(id);
    v1::DeleteResponse response;
    (void)client.stub().Delete(Context().get(), del, &response);
  }
  return vm.exit().exit_code() < 0 ? kExitFailed : vm.exit().exit_code();
}

int Stop(Client& client, const Args& args) {
  v1::StopRequest request;
  request.set_vm_id(RequireId(args, "stop"));
  if (const std::string* timeout = args.Find("timeout-ms")) {
    request.set_timeout_ms(static_cast<std::uint32_t>(ParseNumber("timeout-ms", *timeout)));
  }
  v1::Vm vm;
  grpc::Status status = client.stub().Stop(Context().get(), request, &vm);
  if (!status.ok()) return client.Fail(status);
  client.PrintVm(vm);
  return 0;
}

int Delete(Client& client, const Args& args) {
  v1::DeleteRequest request;
  request.set_vm_id(RequireId(args, "delete"));
  request.set_force(args.Has("force"));
  v1::DeleteResponse response;
  grpc::Status status = client.stub().Delete(Context().get(), request, &response);
  if (!status.ok()) return client.Fail(status);
  if (client.json()) client.PrintJson(response);
  return 0;
}

int List(Client& client, const Args&) {
  v1::ListResponse response;
  grpc::Status status = client.stub().List(Context().get(), v1::ListRequest(), &response);
  if (!status.ok()) return client.Fail(status);
  client.PrintVms(response);
  return 0;
}

void PrintEvent(const v1::Event& event) {
  std::printf("%-24s %-7s", event.vm_id().c_str(), v1::Event::Kind_Name(event.kind()).c_str());
  if (event.kind() == v1::Event::STATE) {
    std::printf(" %s", v1::Vm::State_Name(event.state()).c_str());
  }
  if (event.kind() == v1::Event::BOOTED) {
    std::printf(" %.3f ms", static_cast<double>(event.boot_time_us()) / 1000.0);
  }
  if (event.kind() == v1::Event::EXITED) {
    std::printf(" code %d: %s", event.exit().exit_code(), event.exit().reason().c_str());
  }
  std::printf("\n");
}

int Watch(Client& client, const Args& args) {
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
      PrintEvent(event);
    }
    std::fflush(stdout);
  }
  grpc::Status status = reader->Finish();
  return status.ok() ? 0 : client.Fail(status);
}

int Metrics(Client& client, const Args& args) {
  v1::GetMetricsRequest request;
  if (!args.positional.empty()) request.set_vm_id(args.positional[0]);
  v1::GetMetricsResponse response;
  grpc::Status status = client.stub().GetMetrics(Context().get(), request, &response);
  if (!status.ok()) return client.Fail(status);
  std::printf("%s\n", response.json().c_str());
  return 0;
}

int Snapshot(Client& client, const Args& args) {
  v1::CreateSnapshotRequest request;
  request.set_vm_id(RequireId(args, "snapshot"));
  if (args.Has("diff")) request.set_type(v1::CreateSnapshotRequest::DIFF);
  if (const std::string* dir = args.Find("dir")) request.set_snapshot_dir(*dir);
  v1::Snapshot response;
  grpc::Status status = client.stub().CreateSnapshot(Context().get(), request, &response);
  if (!status.ok()) return client.Fail(status);
  client.PrintJson(response);
  return 0;
}

int Restore(Client& client, const Args& args) {
  v1::RestoreRequest request;
  if (const std::string* v = args.Find("snapshot")) request.set_snapshot_id(*v);
  if (const std::string* v = args.Find("state")) request.set_state_path(*v);
  if (const std::string* v = args.Find("mem")) request.set_memory_path(*v);
  if (const std::string* v = args.Find("prefix")) request.set_vm_id_prefix(*v);
  if (const std::string* v = args.Find("count")) {
    request.set_count(static_cast<std::uint32_t>(ParseNumber("count", *v)));
  }
  request.set_resume(args.Has("resume"));
  if (const std::string* backend = args.Find("mem-backend")) {
    if (*backend == "file") {
      request.set_memory_backend(v1::RestoreRequest::FILE);
    } else if (*backend == "uffd") {
      request.set_memory_backend(v1::RestoreRequest::UFFD);
    } else {
      UsageError("--mem-backend: \"" + *backend + "\" is not file or uffd");
    }
  }
  request.set_prefetch_working_set(args.Has("prefetch-working-set"));
  v1::RestoreResponse response;
  grpc::Status status = client.stub().Restore(Context().get(), request, &response);
  if (!status.ok()) return client.Fail(status);
  client.PrintVms(response);
  return 0;
}

int Snapshots(Client& client, const Args& args) {
  v1::ListSnapshotsRequest request;
  if (!args.positional.empty()) request.set_vm_id(args.positional[0]);
  v1::ListSnapshotsResponse response;
  grpc::Status status = client.stub().ListSnapshots(Context().get(), request, &response);
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

int DeleteSnapshot(Client& client, const Args& args) {
  if (args.positional.empty()) UsageError("delete-snapshot needs a snapshot id");
  v1::DeleteSnapshotRequest request;
  request.set_snapshot_id(args.positional[0]);
  v1::DeleteSnapshotResponse response;
  grpc::Status status = client.stub().DeleteSnapshot(Context().get(), request, &response);
  if (!status.ok()) return client.Fail(status);
  if (client.json()) client.PrintJson(response);
  return 0;
}

int TrustSnapshot(Client& client, const Args& args) {
  if (args.positional.empty()) UsageError("trust-snapshot needs a snapshot id");
  v1::TrustSnapshotRequest request;
  request.set_snapshot_id(args.positional[0]);
  v1::Snapshot response;
  grpc::Status status = client.stub().TrustSnapshot(Context().get(), request, &response);
  if (!status.ok()) return client.Fail(status);
  if (client.json()) {
    client.PrintJson(response);
  } else {
    std::printf("%s sealed: emberd restores it as its files are now\n",
                response.snapshot_id().c_str());
  }
  return 0;
}

int RateLimit(Client& client, const Args& args) {
  v1::UpdateRateLimitsRequest request;
  request.set_vm_id(RequireId(args, "rate-limit"));
  v1::RateLimiter limiter;
  auto number = [&](const char* name) -> std::uint64_t {
    const std::string* value = args.Find(name);
    return value == nullptr ? 0 : ParseNumber(name, *value);
  };
  limiter.mutable_bandwidth()->set_size(number("bw-size"));
  limiter.mutable_bandwidth()->set_refill_time(number("bw-refill-ms"));
  limiter.mutable_ops()->set_size(number("ops-size"));
  limiter.mutable_ops()->set_refill_time(number("ops-refill-ms"));
  if (const std::string* drive_id = args.Find("drive")) {
    auto* drive = request.add_drives();
    drive->set_drive_id(*drive_id);
    *drive->mutable_rate_limiter() = limiter;
  }
  if (const std::string* iface_id = args.Find("iface")) {
    auto* iface = request.add_interfaces();
    iface->set_iface_id(*iface_id);
    *iface->mutable_rx_rate_limiter() = limiter;
    *iface->mutable_tx_rate_limiter() = limiter;
  }
  v1::UpdateRateLimitsResponse response;
  grpc::Status status = client.stub().UpdateRateLimits(Context().get(), request, &response);
  return status.ok() ? 0 : client.Fail(status);
}

int UpdateDrive(Client& client, const Args& args) {
  v1::UpdateDriveRequest request;
  request.set_vm_id(RequireId(args, "update-drive"));
  if (args.positional.size() != 3) {
    UsageError("update-drive needs ID DRIVE_ID PATH");
  }
  request.set_drive_id(args.positional[1]);
  request.set_path_on_host(args.positional[2]);
  v1::Vm response;
  grpc::Status status = client.stub().UpdateDrive(Context().get(), request, &response);
  if (!status.ok()) return client.Fail(status);
  if (client.json()) {
    client.PrintJson(response);
  } else {
    std::printf("%s: drive %s is now %s\n", response.vm_id().c_str(), request.drive_id().c_str(),
                request.path_on_host().c_str());
  }
  return 0;
}

int Console(Client& client, const Args& args) {
  grpc::ClientContext context;
  grpc::Status status =
      StreamConsole(client, RequireId(args, "console"), args.Has("follow"), &context);
  return status.ok() ? 0 : client.Fail(status);
}

constexpr Command kCommands[] = {
    {"create",
     "  create [--id ID] (--config FILE | [--vcpus N] [--mem MIB] [--kernel PATH]\n"
     "         [--initrd PATH] [--boot-args ARGS])      build a VM (state CREATED)\n",
     Create},
    {"start", "  start ID | pause ID | resume ID | get ID\n", Start},
    {"pause", "", Pause},
    {"resume", "", Resume},
    {"get", "", Get},
    {"stop", "  stop ID [--timeout-ms N]\n", Stop},
    {"delete", "  delete ID [--force]\n", Delete},
    {"list", "  list\n", List},
    {"watch", "  watch [ID]                                       stream events until interrupted\n",
     Watch},
    {"metrics", "  metrics [ID]                                     a VM's metrics, or emberd's own\n",
     Metrics},
    {"snapshot", "  snapshot ID [--diff] [--dir DIR]                 snapshot a PAUSED VM\n",
     Snapshot},
    {"restore",
     "  restore (--snapshot ID | --state PATH [--mem PATH]) --prefix P [--count N] [--resume]\n"
     "          [--mem-backend file|uffd] [--prefetch-working-set]\n",
     Restore},
    {"snapshots", "  snapshots [VM_ID]                                the snapshots emberd keeps\n",
     Snapshots},
    {"delete-snapshot",
     "  delete-snapshot SNAPSHOT_ID                      remove a snapshot's record and files\n",
     DeleteSnapshot},
    {"trust-snapshot",
     "  trust-snapshot SNAPSHOT_ID                       vouch for a snapshot that has no MAC\n"
     "                                                   (older, or finished while emberd was\n"
     "                                                   down): emberd seals and restores it\n",
     TrustSnapshot},
    {"update-drive",
     "  update-drive ID DRIVE_ID PATH                    swap a running VM's drive's file\n",
     UpdateDrive},
    {"rate-limit",
     "  rate-limit ID (--drive ID | --iface ID) [--bw-size B --bw-refill-ms MS]\n"
     "             [--ops-size N --ops-refill-ms MS]\n",
     RateLimit},
    {"console", "  console ID [--follow]                            the VM's serial output\n",
     Console},
    {"run",
     "  run [create flags] [--rm]                        create + start + follow the console;\n"
     "                                                   exits with the VM's exit code\n",
     RunVm, /*takes_signals=*/true},
    {"fn", kFnHelp, Fn},
};

}  // namespace

std::span<const Command> Commands() { return kCommands; }

const Command* FindCommand(std::string_view name) {
  for (const Command& command : kCommands) {
    if (command.name == name) return &command;
  }
  return nullptr;
}

}  // namespace ember::ctl
