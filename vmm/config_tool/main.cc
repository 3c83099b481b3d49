// ember-config: reads a VM config in Firecracker's config-file JSON format with protobuf's JSON
// parser. ember-vmm runs it for --config (vmm/config_loader.h), so that the full protobuf
// runtime the parser needs lives only in this short-lived process.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
#include <string_view>

#include "vmm/config_tool/vm_config_json.h"
#include "vmm/exit_code.h"

namespace ember::config_tool {
namespace {

constexpr char kUsage[] =
    "usage: ember-config [--binary] FILE\n"
    "\n"
    "Reads the VM config FILE (Firecracker's config-file JSON format; - for standard input)\n"
    "and checks it: malformed JSON, unknown fields, wrong types, values out of range and\n"
    "what Ember does not support (a balloon, MMDS, SMT, ...) are errors. Firecracker's\n"
    "deprecated names (ht_enabled, log_fifo, metrics_fifo) are read as the current ones.\n"
    "Checks that need the host (files, taps, CPU) are ember-vmm's, when it builds the VM.\n"
    "\n"
    "  --binary   write the config to standard output as a binary ember.v1.VmConfig message\n"
    "             (how ember-vmm reads it)\n"
    "\n"
    "Exit codes: 0 parsed, 1 other failure, 2 bad input (one line on standard error).\n";

int Fail(int code, std::string_view message) {
  std::fprintf(stderr, "ember-config: error: %.*s\n", static_cast<int>(message.size()),
               message.data());
  return code;
}

absl::StatusOr<v1::VmConfig> Load(const std::string& path) {
  if (path != "-") return LoadVmConfigJsonFile(path);
  std::string json(std::istreambuf_iterator<char>(std::cin), {});
  return ParseVmConfigJson(json);
}

int Main(int argc, char** argv) {
  bool binary = false;
  std::string path;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return vmm::kExitOk;
    }
    if (arg == "--binary") {
      binary = true;
    } else if (path.empty() && (arg == "-" || !arg.starts_with("-"))) {
      path = arg;
    } else {
      return Fail(vmm::kExitBadInput, "unexpected argument \"" + std::string(arg) + "\" (see --help)");
    }
  }
  if (path.empty()) return Fail(vmm::kExitBadInput, "no config file given (see --help)");
  absl::StatusOr<v1::VmConfig> config = Load(path);
  if (!config.ok()) return Fail(vmm::kExitBadInput, std::string(config.status().message()));
  if (!binary) return vmm::kExitOk;
  std::string bytes = config->SerializeAsString();
  for (std::size_t done = 0; done < bytes.size();) {
    ssize_t n = ::write(STDOUT_FILENO, bytes.data() + done, bytes.size() - done);
    if (n < 0) return Fail(vmm::kExitError, "cannot write the config to standard output");
    done += static_cast<std::size_t>(n);
  }
  return vmm::kExitOk;
}

}  // namespace
}  // namespace ember::config_tool

int main(int argc, char** argv) { return ember::config_tool::Main(argc, argv); }
