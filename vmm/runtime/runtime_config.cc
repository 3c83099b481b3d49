#include "runtime_config.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "vmm/base/sibling_executable.h"
#include "vmm/base/status.h"

namespace ember::runtime {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError("runtime config: \"" + field + "\" " + why);
}

template <typename T>
absl::Status Take(const json& object, const std::string& prefix, const std::string& key, T* out) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return absl::OkStatus();
  try {
    *out = it->get<T>();
  } catch (const json::exception&) {
    return Bad(prefix + key, "has the wrong type");
  }
  return absl::OkStatus();
}

absl::Status CheckKeys(const json& object, const std::string& prefix,
                       std::initializer_list<const char*> known) {
  for (const auto& [key, value] : object.items()) {
    bool found = false;
    for (const char* k : known) found = found || key == k;
    if (!found) return Bad(prefix + key, "is not a field of the runtime config");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RuntimeConfig> ParseRuntimeConfig(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("runtime config: not a JSON object");
  }
  absl::Status known = CheckKeys(j, "",
                                 {"vmm", "kernel", "initrd", "boot_args", "boot_timeout_ms",
                                  "image_cache_dir", "rootfs_tool", "jailer"});
  if (!known.ok()) return known;
  RuntimeConfig config;
  // Only root can jail; a rootless caller's VMM runs as that caller, with nothing to drop.
  config.jailer.enabled = ::geteuid() == 0;
  for (absl::Status s :
       {Take(j, "", "vmm", &config.vmm_path), Take(j, "", "kernel", &config.kernel),
        Take(j, "", "initrd", &config.initrd), Take(j, "", "boot_args", &config.boot_args),
        Take(j, "", "boot_timeout_ms", &config.boot_timeout_ms),
        Take(j, "", "image_cache_dir", &config.image_cache_dir),
        Take(j, "", "rootfs_tool", &config.rootfs_tool)}) {
    if (!s.ok()) return s;
  }
  if (config.boot_timeout_ms <= 0) return Bad("boot_timeout_ms", "must be positive");
  if (auto it = j.find("jailer"); it != j.end()) {
    if (!it->is_object()) return Bad("jailer", "has the wrong type");
    JailerSettings& jail = config.jailer;
    EMBER_RETURN_IF_ERROR(CheckKeys(
        *it, "jailer.",
        {"enabled", "path", "chroot_base_dir", "uid_base", "uid_count", "cgroup_parent"}));
    for (absl::Status s :
         {Take(*it, "jailer.", "enabled", &jail.enabled), Take(*it, "jailer.", "path", &jail.path),
          Take(*it, "jailer.", "chroot_base_dir", &jail.chroot_base_dir),
          Take(*it, "jailer.", "uid_base", &jail.uid_base),
          Take(*it, "jailer.", "uid_count", &jail.uid_count),
          Take(*it, "jailer.", "cgroup_parent", &jail.cgroup_parent)}) {
      if (!s.ok()) return s;
    }
    if (jail.uid_base == 0) return Bad("jailer.uid_base", "must not be 0 (root)");
    if (jail.uid_count == 0 || jail.uid_base + uint64_t{jail.uid_count} > 0xFFFF'FFFFull) {
      return Bad("jailer.uid_count", "must be positive, and the range end below 4294967295");
    }
    if (jail.cgroup_parent.empty() || jail.cgroup_parent.find("..") != std::string::npos ||
        jail.cgroup_parent.front() == '/') {
      return Bad("jailer.cgroup_parent", "must be a relative cgroup path without \"..\"");
    }
  }
  if (config.jailer.path.empty()) config.jailer.path = base::SiblingExecutable("ember-jailer");
  if (config.jailer.chroot_base_dir.empty()) {
    config.jailer.chroot_base_dir = config.image_cache_dir + "/jails";
  }
  if (config.vmm_path.empty()) config.vmm_path = base::SiblingExecutable("ember-vmm");
  if (config.rootfs_tool.empty()) config.rootfs_tool = base::SiblingExecutable("ember-rootfs");
  return config;
}

ConfigSource ChooseConfig(const std::string& flag) {
  if (!flag.empty()) return {flag, true};
  if (const char* env = std::getenv("EMBER_RUNTIME_CONFIG"); env != nullptr && *env != '\0') {
    return {env, true};
  }
  return {"/etc/ember/runtime.json", false};
}

absl::StatusOr<RuntimeConfig> LoadRuntimeConfig(const std::string& path, bool required) {
  std::ifstream in(path);
  if (!in) {
    if (required) return absl::InvalidArgumentError("runtime config " + path + ": cannot read it");
    return ParseRuntimeConfig("{}");
  }
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<RuntimeConfig> config = ParseRuntimeConfig(text.str());
  if (!config.ok()) {
    return absl::InvalidArgumentError(path + ": " + std::string(config.status().message()));
  }
  return config;
}

std::string DefaultBootArgs(const std::string& kernel) {
  if (kernel.empty()) return "console=ttyS0 ember.test=agent";
  return "console=ttyS0 reboot=k panic=1 init=/sbin/ember-init";
}

}  // namespace ember::runtime
