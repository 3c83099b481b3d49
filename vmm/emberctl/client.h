#pragma once

// What every emberctl subcommand shares: its parsed arguments, usage errors, and the gRPC client
// with the way results and failures are printed.
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "ember/v1/api.grpc.pb.h"

namespace ember::ctl {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

// Prints "emberctl: <message> (see emberctl --help)" and exits with kExitUsage.
[[noreturn]] void UsageError(const std::string& message);

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;  // --name value, or --name "" for switches

  bool Has(const std::string& name) const { return options.count(name) != 0; }
  // The option's value, or nullptr when it was not given.
  const std::string* Find(const std::string& name) const;
};

// Switches take no value; every other --option takes one.
Args ParseArgs(const std::vector<std::string>& argv, const std::vector<std::string>& switches);

// `text` as a whole number, or a usage error naming --`name`.
std::uint64_t ParseNumber(const std::string& name, const std::string& text);

// The first positional argument, the VM id `command` works on.
std::string RequireId(const Args& args, const char* command);

// A deadline for one unary call.
std::unique_ptr<grpc::ClientContext> Context(int seconds = 60);

class Client {
 public:
  Client(const std::string& socket, bool json);

  v1::Ember::Stub& stub() { return *stub_; }
  v1::Functions::Stub& functions() { return *functions_; }
  bool json() const { return json_; }

  // Prints the error the way a user reads it and returns the exit code for it.
  int Fail(const grpc::Status& status) const;

  void PrintJson(const google::protobuf::Message& message) const;

  // A ListResponse or RestoreResponse: JSON whole, or one line per VM.
  template <typename Response>
  void PrintVms(const Response& response) const {
    if (json_) return PrintJson(response);
    for (const v1::Vm& vm : response.vms()) PrintVm(vm);
  }

  void PrintVm(const v1::Vm& vm) const;

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Ember::Stub> stub_;
  std::unique_ptr<v1::Functions::Stub> functions_;
  std::string socket_;
  bool json_;
};

}  // namespace ember::ctl
