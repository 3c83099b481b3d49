#pragma once

#include <sys/types.h>

#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "ember/v1/vm_config.pb.h"
#include "vmm/base/unique_fd.h"

namespace ember::vmm {

// Where ember-vmm finds ember-config (vmm/config_tool/): beside its own executable, which the
// jailer links into the jail with it.
[[nodiscard]] std::string DefaultConfigToolPath();

// A running ember-config (vmm/config_tool/) and the pipes it answers on. Owned by
// PendingVmConfig.
struct RunningTool {
  pid_t pid = -1;
  base::UniqueFd out;
  base::UniqueFd err;
};

// ember-config at work on a config while ember-vmm gets on with what does not need it (its
// seccomp filters). Move-only; destroying it unfinished reaps the tool.
class PendingVmConfig {
 public:
  // Starts `tool` on `source` (a path, or "-" for `input` on its standard input).
  [[nodiscard]] static absl::StatusOr<PendingVmConfig> Start(const std::string& source,
                                                             const std::string& input,
                                                             const std::string& tool);
  PendingVmConfig(PendingVmConfig&& other) noexcept
      : tool_path_(std::move(other.tool_path_)), tool_(std::move(other.tool_)) {
    other.tool_.pid = -1;  // the tool is this object's to reap now
  }
  PendingVmConfig& operator=(PendingVmConfig&&) = delete;
  ~PendingVmConfig();

  // Waits for the tool; returns the config or its error (as LoadVmConfigFile). Call once.
  [[nodiscard]] absl::StatusOr<v1::VmConfig> Finish();

 private:
  PendingVmConfig() = default;
  std::string tool_path_;
  RunningTool tool_;
};

// Starts reading the config file at `path` (see LoadVmConfigFile); Finish() gives the result.
[[nodiscard]] absl::StatusOr<PendingVmConfig> StartLoadingVmConfigFile(
    const std::string& path, const std::string& tool = DefaultConfigToolPath());

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

// Reads the binary protobuf `message` from `path`; errors are InvalidArgument naming it by
// `what` ("config file") and the file.
[[nodiscard]] absl::Status LoadBinaryMessage(const std::string& path, const std::string& what,
                                             google::protobuf::MessageLite* message);

}  // namespace ember::vmm
