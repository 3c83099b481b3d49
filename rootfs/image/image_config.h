#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::rootfs {

// What ember-agent needs to run the image's process, from the OCI image config's "config"
// object (Entrypoint, Cmd, Env, WorkingDir, User). Written into the image as the agent
// protocol's ImageConfig message (proto/ember/v1/agent.proto), binary, at
// /etc/ember/image-config.pb, where ember-agent reads it. An empty list or string means the
// image did not say (the agent's defaults: no process, "/", root).
struct ImageConfig {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;
  std::string working_dir;
  std::string user;
};

// Where the image config lies in the image (agent.proto names it).
inline constexpr const char* kImageConfigPath = "etc/ember/image-config.pb";

// Reads an OCI image config blob (application/vnd.oci.image.config.v1+json). A blob that is
// not JSON or has fields of the wrong type is InvalidArgument; a blob without a "config"
// object gives the empty config.
[[nodiscard]] absl::StatusOr<ImageConfig> ParseOciImageConfig(std::string_view json);

// `config` as /etc/ember/image-config.pb's bytes: an ember.v1.ImageConfig message.
[[nodiscard]] std::string SerializeImageConfig(const ImageConfig& config);

}  // namespace ember::rootfs
