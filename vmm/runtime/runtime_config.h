#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::runtime {

// How containers' VMMs are jailed (jail.h): through ember-jailer unless `enabled` is false
// (its default: whether the runtime runs as root, which jailing needs).
struct JailerSettings {
  bool enabled = true;
  std::string path;              // ember-jailer; default: the one beside ember-runtime
  // Where jails are built: on the image cache's file system, since each jail gets a hard link
  // of its root image. Default: IMAGE_CACHE_DIR/jails.
  std::string chroot_base_dir;
  // Each container's VMM runs as a uid (and gid) of its own from [uid_base, uid_base+uid_count).
  std::uint32_t uid_base = 1'500'000'000;
  std::uint32_t uid_count = 1'000'000;
  std::string cgroup_parent = "ember-runtime";  // the jails' cgroups go under it
};

// The runtime's own settings: a JSON file (--config, else $EMBER_RUNTIME_CONFIG, else
// /etc/ember/runtime.json when it exists; docs/ember-runtime.md lists the fields). Every field
// is optional. A VM's vCPUs and memory come from its bundle (bundle.h).
struct RuntimeConfig {
  std::string vmm_path;  // ember-vmm; default: the one beside ember-runtime
  // The guest kernel when the bundle's annotations name none. Empty: ember-vmm's built-in test
  // guest, running its `agent` scenario (what the tests on machines without a Linux guest use).
  std::string kernel;
  std::string initrd;
  std::string boot_args;          // default: per kernel (see DefaultBootArgs)
  int boot_timeout_ms = 120'000;  // VMM start to the agent's ready event
  std::string image_cache_dir = "/var/cache/ember/images";
  std::string rootfs_tool;  // ember-rootfs; default: beside ember-runtime
  JailerSettings jailer;
};

// The config at `path`; InvalidArgument naming the field or the JSON error. A missing file is
// an error only when `required` (named by the user).
[[nodiscard]] absl::StatusOr<RuntimeConfig> LoadRuntimeConfig(const std::string& path,
                                                              bool required);
// The same from JSON text (tests).
[[nodiscard]] absl::StatusOr<RuntimeConfig> ParseRuntimeConfig(const std::string& json);

// The path to load: `flag` if given, else $EMBER_RUNTIME_CONFIG, else /etc/ember/runtime.json;
// `required` says whether the user named it.
struct ConfigSource {
  std::string path;
  bool required = false;
};
[[nodiscard]] ConfigSource ChooseConfig(const std::string& flag);

// The kernel command line for a VM of `kernel` ("" the built-in test guest).
[[nodiscard]] std::string DefaultBootArgs(const std::string& kernel);

}  // namespace ember::runtime
