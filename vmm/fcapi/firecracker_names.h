#pragma once

#include <string>
#include <string_view>

// What ember-vmm and its API front (ember-fc-api) both know of Firecracker's command line.
// Header-only and allocation-free where it is on ember-vmm's start-up path.
namespace ember::fcapi {

// The API front, beside ember-vmm (vmm/fcapi/api_main.cc).
inline constexpr char kApiFrontName[] = "ember-fc-api";
// Firecracker's API version whose shapes this front follows (GET /version, --version).
inline constexpr char kFirecrackerApiVersion[] = "1.13.0";
// Where Firecracker serves its API when run without --api-sock or --no-api.
inline constexpr char kDefaultApiSock[] = "/run/firecracker.socket";

// Firecracker's own flags (those ember-vmm does not also have under the same name).
[[nodiscard]] inline bool IsFirecrackerFlag(std::string_view arg) {
  for (std::string_view flag :
       {"--api-sock", "--config-file", "--no-api", "--id", "--boot-timer", "--level",
        "--seccomp-filter", "--no-seccomp", "--show-level", "--show-log-origin", "--module",
        "--start-time-cpu-us", "--parent-cpu-time-us", "--http-api-max-payload-size",
        "--mmds-size-limit", "--metadata", "--enable-pci", "--snapshot-version",
        "--describe-snapshot", "--version"}) {
    if (arg == flag) return true;
  }
  return false;
}

// Why Ember refuses one of Firecracker's flags; empty for a flag it takes.
[[nodiscard]] inline std::string RefusedFlagReason(std::string_view arg) {
  if (arg == "--seccomp-filter") {
    return "Ember installs its own seccomp filter per thread kind and loads no BPF file; use "
           "--no-seccomp (or ember-vmm's --seccomp log) to relax them";
  }
  if (arg == "--mmds-size-limit" || arg == "--metadata") {
    return "Ember has no MMDS (microVM metadata service)";
  }
  if (arg == "--enable-pci") return "Ember's devices are virtio-mmio only; there is no PCI";
  if (arg == "--module") return "Ember's log has no module filter";
  if (arg == "--snapshot-version" || arg == "--describe-snapshot") {
    return "Ember's snapshot files are not Firecracker's; ember-vmm --restore-from reads them";
  }
  return {};
}

// Firecracker's rule for --id: 1 to 64 characters, letters, digits and '-'. Empty if valid.
[[nodiscard]] inline std::string CheckInstanceId(std::string_view id) {
  if (id.empty() || id.size() > 64) return "the id must have 1 to 64 characters";
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-';
    if (!ok) return "\"" + std::string(id) + "\" has a character other than a letter, digit or '-'";
  }
  return {};
}

}  // namespace ember::fcapi
