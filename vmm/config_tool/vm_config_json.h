#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "ember/v1/vm_config.pb.h"

// The JSON side of the VM config: Firecracker's config-file format read with protobuf's JSON
// parser. Linked only into ember-config, the short-lived process ember-vmm runs for --config,
// because it needs protobuf's full runtime and ember-vmm links the lite one
// (proto/CMakeLists.txt says why).
namespace ember::config_tool {

// Parses a VM config in its JSON form, moves Firecracker's deprecated names to the current
// ones and applies the rules that need no host (rules::CheckVmConfig). Unknown fields, wrong
// types, malformed JSON, a section or value Ember does not support and a broken rule are
// errors (InvalidArgument) whose one-line message names the field as the file spells it.
[[nodiscard]] absl::StatusOr<v1::VmConfig> ParseVmConfigJson(const std::string& json);

// Reads and parses the config file at `path`; errors name the file.
[[nodiscard]] absl::StatusOr<v1::VmConfig> LoadVmConfigJsonFile(const std::string& path);

}  // namespace ember::config_tool
