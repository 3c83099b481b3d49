#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::rootfs {

// What ember-agent needs to run the image's process, from the OCI image config's "config"
// object. Written into the image as /etc/ember/image.json with the OCI field names:
//   {"Entrypoint": [...], "Cmd": [...], "Env": ["K=V", ...], "WorkingDir": "...", "User": "..."}
// Every key is always there; an empty list or string means the image did not say (the
// agent's defaults: no process, "/", root).
struct ImageConfig {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;
  std::string working_dir;
  std::string user;
};

// Where the image config lies in the image.
inline constexpr const char* kImageConfigPath = "etc/ember/image.json";

// Reads an OCI image config blob (application/vnd.oci.image.config.v1+json). A blob that is
// not JSON or has fields of the wrong type is InvalidArgument; a blob without a "config"
// object gives the empty config.
[[nodiscard]] absl::StatusOr<ImageConfig> ParseOciImageConfig(std::string_view json);

// `config` as /etc/ember/image.json's text.
[[nodiscard]] std::string ImageConfigJson(const ImageConfig& config);

}  // namespace ember::rootfs
