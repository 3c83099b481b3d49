#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "ember/v1/agent.pb.h"
#include "rootfs/agent/spawn.h"

namespace ember::agent {

// Where ember-rootfs puts the image's config (agent.proto, ImageConfig).
inline constexpr const char* kImageConfigPath = "/etc/ember/image-config.pb";

// Reads the binary ImageConfig at `path`. A missing file is an image without a config (an
// empty one); an unreadable, oversized or corrupt one is an error naming the file.
[[nodiscard]] absl::StatusOr<v1::ImageConfig> LoadImageConfig(const std::string& path);

struct UserIds {
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
};

// An OCI user ("uid", "uid:gid", "name", "name:group"; empty is root) as ids, names looked
// up in `etc_dir`/passwd and `etc_dir`/group.
[[nodiscard]] absl::StatusOr<UserIds> ResolveUser(const std::string& user,
                                                  const std::string& etc_dir = "/etc");

// What the image runs by default (entrypoint + cmd, its env, working_dir and user).
// FAILED_PRECONDITION when the image names no program.
[[nodiscard]] absl::StatusOr<SpawnSpec> SpecFromImage(const v1::ImageConfig& config);

}  // namespace ember::agent
