// libFuzzer target: a Firecracker JSON config through ember-config's loader (protobuf's JSON
// parser, the deprecated names, every rule that needs no host). A user's bad file must get a
// one-line error, never a crash; a file it accepts must encode to the binary message
// ember-vmm takes, and read back the same.

#include <cstdint>
#include <cstdlib>
#include <string>

#include "vmm/config_tool/vm_config_json.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ember;
  // reinterpret_cast: libFuzzer's bytes as the chars of a file's text.
  absl::StatusOr<v1::VmConfig> config =
      config_tool::ParseVmConfigJson(std::string(reinterpret_cast<const char*>(data), size));
  if (!config.ok()) {
    const std::string message(config.status().message());
    if (message.empty() || message.find('\n') != std::string::npos) std::abort();
    return 0;
  }
  v1::VmConfig again;
  if (!again.ParseFromString(config->SerializeAsString()) ||
      again.SerializeAsString() != config->SerializeAsString()) {
    std::abort();
  }
  return 0;
}
