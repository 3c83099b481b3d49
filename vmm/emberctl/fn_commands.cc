#include "vmm/emberctl/fn_commands.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>

namespace ember::ctl {
namespace {

// Deploying boots a VM and snapshots it; invoking may restore one.
constexpr int kDeploySeconds = 600;
constexpr int kInvokeSlackSeconds = 60;

std::string Name(const Args& args, const char* command) {
  if (args.positional.size() < 2) UsageError(std::string("fn ") + command + " needs a NAME");
  return args.positional[1];
}

std::string ReadAll(std::istream& in) {
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string ReadFileOrUsage(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) UsageError("--" + flag + ": cannot read \"" + path + "\"");
  return ReadAll(in);
}

// Pool flags into `pool`; whether any was given.
bool PoolFromArgs(const Args& args, v1::FunctionPool* pool) {
  bool any = false;
  auto number = [&](const char* flag, auto setter) {
    if (const std::string* v = args.Find(flag)) {
      (pool->*setter)(static_cast<std::uint32_t>(ParseNumber(flag, *v)));
      any = true;
    }
  };
  number("min-warm", &v1::FunctionPool::set_min_warm);
  number("max-concurrency", &v1::FunctionPool::set_max_concurrency);
  number("keep-warm-ms", &v1::FunctionPool::set_keep_warm_ms);
  number("idle-to-zero-ms", &v1::FunctionPool::set_idle_to_zero_ms);
  return any;
}

// ember-rootfs (beside emberctl) builds ARCHIVE's image at `image`: emberd runs no programs.
int BuildImage(const std::string& archive, const std::string& image) {
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) {
    std::perror("emberctl: readlink /proc/self/exe");
    return kExitFailed;
  }
  std::string dir(self, static_cast<std::size_t>(n));
  const std::string tool = dir.substr(0, dir.rfind('/')) + "/ember-rootfs";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::execl(tool.c_str(), tool.c_str(), archive.c_str(), image.c_str(), nullptr);
    std::perror(("emberctl: exec " + tool).c_str());
    ::_exit(127);
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "emberctl: ember-rootfs could not build an image from %s\n",
                 archive.c_str());
    return kExitFailed;
  }
  return 0;
}

void PrintFunction(const Client& client, const v1::Function& f) {
  if (client.json()) return client.PrintJson(f);
  std::printf("%-20s %-9s invocations %llu (pool hits %llu, failures %llu) p50 %.3f ms p99 %.3f "
              "ms  clones paused %u warm %u busy %u\n",
              f.name().c_str(), v1::Function::State_Name(f.state()).c_str(),
              static_cast<unsigned long long>(f.counters().invocations()),
              static_cast<unsigned long long>(f.counters().pool_hits()),
              static_cast<unsigned long long>(f.counters().failures()),
              static_cast<double>(f.counters().latency_p50_us()) / 1000.0,
              static_cast<double>(f.counters().latency_p99_us()) / 1000.0, f.paused_clones(),
              f.warm_clones(), f.busy_clones());
}

int Deploy(Client& client, const Args& args) {
  v1::DeployFunctionRequest request;
  request.set_name(Name(args, "deploy"));
  const std::string* image = args.Find("image");
  const std::string* oci = args.Find("oci");
  if ((image == nullptr) == (oci == nullptr)) UsageError("fn deploy needs --image or --oci");
  const std::string* mem = args.Find("mem");
  if (mem == nullptr) UsageError("fn deploy needs --mem MIB");
  request.set_mem_size_mib(static_cast<std::uint32_t>(ParseNumber("mem", *mem)));
  if (const std::string* v = args.Find("vcpus")) {
    request.set_vcpu_count(static_cast<std::uint32_t>(ParseNumber("vcpus", *v)));
  }
  if (const std::string* v = args.Find("kernel")) request.set_kernel_image_path(*v);
  if (const std::string* v = args.Find("boot-args")) request.set_boot_args(*v);
  if (const std::string* v = args.Find("handler")) {
    std::istringstream words(*v);
    for (std::string word; words >> word;) request.add_handler_argv(word);
  }
  if (const std::string* v = args.Find("warmup-file")) {
    request.add_warmup_payloads(ReadFileOrUsage("warmup-file", *v));
  }
  request.set_network(args.Has("network"));
  PoolFromArgs(args, request.mutable_pool());
  std::string built;
  if (oci != nullptr) {
    // Beside the archive, so that it lies under the same --allow-dir; emberd keeps its own copy.
    built = *oci + ".ember-rootfs-" + std::to_string(::getpid()) + ".ext4";
    if (int code = BuildImage(*oci, built); code != 0) return code;
    request.set_root_image_path(built);
  } else {
    request.set_root_image_path(*image);
  }
  v1::Function function;
  grpc::Status status =
      client.functions().DeployFunction(Context(kDeploySeconds).get(), request, &function);
  if (!built.empty()) ::unlink(built.c_str());
  if (!status.ok()) return client.Fail(status);
  if (client.json()) {
    client.PrintJson(function);
  } else {
    std::printf("%s READY: snapshot %s, deployed in %.3f ms (boot to ready %.3f ms)\n",
                function.name().c_str(), function.snapshot_id().c_str(),
                static_cast<double>(function.deploy().total_us()) / 1000.0,
                static_cast<double>(function.deploy().boot_to_ready_us()) / 1000.0);
  }
  return 0;
}

int Invoke(Client& client, const Args& args) {
  v1::FunctionInvokeRequest request;
  request.set_name(Name(args, "invoke"));
  if (const std::string* v = args.Find("payload-file")) {
    request.set_payload(ReadFileOrUsage("payload-file", *v));
  } else {
    request.set_payload(ReadAll(std::cin));
  }
  std::uint64_t timeout_ms = 30'000;
  if (const std::string* v = args.Find("timeout-ms")) {
    timeout_ms = ParseNumber("timeout-ms", *v);
    request.set_timeout_ms(static_cast<std::uint32_t>(timeout_ms));
  }
  const int seconds = static_cast<int>(timeout_ms / 1000) + kInvokeSlackSeconds;
  v1::FunctionInvokeResponse response;
  if (args.Has("stream")) {
    auto context = Context(seconds);
    auto reader = client.functions().InvokeStream(context.get(), request);
    v1::FunctionInvokeChunk chunk;
    while (reader->Read(&chunk)) {
      if (!client.json()) std::fwrite(chunk.output().data(), 1, chunk.output().size(), stdout);
      response.mutable_output()->append(chunk.output());
      if (chunk.last()) {
        *response.mutable_timings() = chunk.timings();
        response.set_vm_id(chunk.vm_id());
      }
    }
    if (grpc::Status status = reader->Finish(); !status.ok()) return client.Fail(status);
  } else {
    grpc::Status status = client.functions().Invoke(Context(seconds).get(), request, &response);
    if (!status.ok()) return client.Fail(status);
    if (!client.json()) {
      std::fwrite(response.output().data(), 1, response.output().size(), stdout);
    }
  }
  if (client.json()) client.PrintJson(response);
  return 0;
}

int List(Client& client, const Args& args) {
  v1::ListFunctionsRequest request;
  if (args.positional.size() > 1) request.set_name(args.positional[1]);
  v1::ListFunctionsResponse response;
  grpc::Status status = client.functions().ListFunctions(Context().get(), request, &response);
  if (!status.ok()) return client.Fail(status);
  if (client.json()) {
    client.PrintJson(response);
  } else {
    for (const v1::Function& f : response.functions()) PrintFunction(client, f);
  }
  return 0;
}

int Update(Client& client, const Args& args) {
  v1::UpdateFunctionRequest request;
  request.set_name(Name(args, "update"));
  // The settings not given stay as they are.
  v1::ListFunctionsRequest get;
  get.set_name(request.name());
  v1::ListFunctionsResponse current;
  grpc::Status status = client.functions().ListFunctions(Context().get(), get, &current);
  if (!status.ok()) return client.Fail(status);
  if (current.functions_size() == 1) *request.mutable_pool() = current.functions(0).spec().pool();
  if (!PoolFromArgs(args, request.mutable_pool())) UsageError("fn update: no pool setting given");
  v1::Function function;
  status = client.functions().UpdateFunction(Context().get(), request, &function);
  if (!status.ok()) return client.Fail(status);
  PrintFunction(client, function);
  return 0;
}

int Delete(Client& client, const Args& args) {
  v1::DeleteFunctionRequest request;
  request.set_name(Name(args, "delete"));
  request.set_force(args.Has("force"));
  v1::DeleteFunctionResponse response;
  grpc::Status status =
      client.functions().DeleteFunction(Context(kDeploySeconds).get(), request, &response);
  return status.ok() ? 0 : client.Fail(status);
}

}  // namespace

int Fn(Client& client, const Args& args) {
  if (args.positional.empty()) UsageError("fn needs deploy, invoke, list, update or delete");
  const std::string& verb = args.positional[0];
  if (verb == "deploy") return Deploy(client, args);
  if (verb == "invoke") return Invoke(client, args);
  if (verb == "list") return List(client, args);
  if (verb == "update") return Update(client, args);
  if (verb == "delete") return Delete(client, args);
  UsageError("fn: unknown subcommand \"" + verb + "\"");
}

}  // namespace ember::ctl
