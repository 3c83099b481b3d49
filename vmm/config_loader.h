#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "ember/v1/vm_config.pb.h"

namespace ember::vmm {

// Where ember-vmm finds ember-config (vmm/config_tool/): beside its own executable, which the
// jailer links into the jail with it.
[[nodiscard]] std::string DefaultConfigToolPath();

// Reads the config file at `path` (Firecracker's config-file JSON format) by running the
// ember-config tool at `tool`, which parses it with protobuf's JSON parser and hands back the
// binary message. ember-vmm itself links only protobuf-lite, which has no JSON parser.
// Errors: InvalidArgument with ember-config's one-line message (naming the file and field);
// Internal when the tool cannot be run.
[[nodiscard]] absl::StatusOr<v1::VmConfig> LoadVmConfigFile(
    const std::string& path, const std::string& tool = DefaultConfigToolPath());

// The same for JSON text in memory (given to the tool on its standard input).
[[nodiscard]] absl::StatusOr<v1::VmConfig> ParseVmConfigJson(
    const std::string& json, const std::string& tool = DefaultConfigToolPath());

// Reads a binary ember.v1.VmConfig message from `path` (what emberd writes for the VMMs it
// starts, so they skip the JSON step). Errors name the file.
[[nodiscard]] absl::StatusOr<v1::VmConfig> LoadVmConfigBinaryFile(const std::string& path);

}  // namespace ember::vmm
