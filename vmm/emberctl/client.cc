#include "vmm/emberctl/client.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>

#include <google/protobuf/util/json_util.h>

namespace ember::ctl {
namespace {

const char* CodeName(grpc::StatusCode code) {
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

}  // namespace

void UsageError(const std::string& message) {
  std::fprintf(stderr, "emberctl: %s (see emberctl --help)\n", message.c_str());
  std::exit(kExitUsage);
}

const std::string* Args::Find(const std::string& name) const {
  auto it = options.find(name);
  return it == options.end() ? nullptr : &it->second;
}

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

std::string RequireId(const Args& args, const char* command) {
  if (args.positional.empty()) UsageError(std::string(command) + " needs a VM id");
  return args.positional[0];
}

std::unique_ptr<grpc::ClientContext> Context(int seconds) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return context;
}

Client::Client(const std::string& socket, bool json)
    : channel_(grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials())),
      stub_(v1::Ember::NewStub(channel_)),
      functions_(v1::Functions::NewStub(channel_)),
      socket_(socket),
      json_(json) {}

int Client::Fail(const grpc::Status& status) const {
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    std::fprintf(stderr, "emberctl: cannot reach emberd at %s: %s\n", socket_.c_str(),
                 status.error_message().c_str());
    return kExitUnreachable;
  }
  std::fprintf(stderr, "emberctl: %s: %s\n", CodeName(status.error_code()),
               status.error_message().c_str());
  return kExitFailed;
}

void Client::PrintJson(const google::protobuf::Message& message) const {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  std::printf("%s\n", out.c_str());
}

void Client::PrintVm(const v1::Vm& vm) const {
  if (json_) return PrintJson(vm);
  std::printf("%-24s %-8s pid %-8d boot %8.3f ms", vm.vm_id().c_str(),
              v1::Vm::State_Name(vm.state()).c_str(), vm.pid(),
              static_cast<double>(vm.boot_time_us()) / 1000.0);
  if (vm.state() == v1::Vm::STOPPED) {
    std::printf("  exit %d: %s", vm.exit().exit_code(), vm.exit().reason().c_str());
  }
  std::printf("\n");
}

}  // namespace ember::ctl
