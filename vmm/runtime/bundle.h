#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::runtime {

// One of the process's resource limits, checked: `resource` is the RLIMIT_* number of `name`,
// soft <= hard. RLIM_INFINITY is ~0 as in setrlimit(2).
struct BundleRlimit {
  std::string name;  // "RLIMIT_NOFILE"
  int resource = 0;  // RLIMIT_NOFILE
  uint64_t soft = 0;
  uint64_t hard = 0;
};

// The process's capability sets by name ("CAP_CHOWN"), as config.json gives them; the guest's
// agent checks the names.
struct BundleCapabilities {
  std::vector<std::string> bounding;
  std::vector<std::string> effective;
  std::vector<std::string> inheritable;
  std::vector<std::string> permitted;
  std::vector<std::string> ambient;
};

// The container's process, as the guest's agent runs it (agent.proto's Exec).
struct BundleProcess {
  std::vector<std::string> args;  // never empty
  std::vector<std::string> env;   // "NAME=value", in config.json's order
  std::string cwd;                // absolute
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> additional_gids;
  bool terminal = false;
  uint32_t console_height = 0;  // 0: not given
  uint32_t console_width = 0;
  std::vector<BundleRlimit> rlimits;
  bool no_new_privileges = false;
  std::optional<BundleCapabilities> capabilities;  // nullopt: none given (root keeps all)
};

// The annotations ember-runtime reads (documented in docs/ember-runtime.md). Any other
// `io.ember.` annotation is refused as a likely misspelling; other prefixes pass through.
inline constexpr char kAnnotationKernel[] = "io.ember.kernel";       // absolute path
inline constexpr char kAnnotationBootArgs[] = "io.ember.boot-args";  // kernel command line
inline constexpr char kAnnotationVcpus[] = "io.ember.vcpus";         // 1..32
inline constexpr char kAnnotationMemory[] = "io.ember.memory";       // "512Mi", "1G", bytes

// Without limits or annotations a container's VM gets one vCPU and 128 MiB (Firecracker's
// defaults). A memory limit L becomes ceil(L / 1 MiB) + kGuestOverheadMib: the limit is what
// the container's processes may use, and the guest's kernel, init and agent need their own.
inline constexpr uint32_t kDefaultVcpus = 1;
inline constexpr uint32_t kDefaultMemoryMib = 128;
inline constexpr uint32_t kGuestOverheadMib = 64;
// ember-vmm's bounds (vmm/rules): 1-32 vCPUs, 16 MiB-1 TiB.
inline constexpr uint32_t kMaxVcpus = 32;
inline constexpr uint32_t kMinMemoryMib = 16;
inline constexpr uint32_t kMaxMemoryMib = 1024 * 1024;

// A file the guest's agent writes before the container's process starts: a bind mount's
// source, copied (a VM cannot share the host's files).
struct BundleFile {
  std::string path;  // in the guest, absolute
  std::string contents;
  uint32_t mode = 0644;
};

// At most this much of bind-mounted files is copied into a guest: it travels in the agent's
// Exec request, whose frame is at most 1 MiB.
inline constexpr std::size_t kMaxCopiedBytes = 512 * 1024;

// An OCI bundle (runtime-spec config.json) turned into what an Ember microVM needs.
struct Bundle {
  std::filesystem::path dir;     // the bundle directory, absolute
  std::filesystem::path rootfs;  // root.path resolved against `dir`; an existing directory
  bool rootfs_readonly = false;
  BundleProcess process;
  std::string hostname;
  uint32_t vcpus = kDefaultVcpus;
  uint32_t memory_mib = kDefaultMemoryMib;
  std::filesystem::path kernel;  // io.ember.kernel; empty: the runtime's default
  std::string boot_args;         // io.ember.boot-args; empty: the runtime's default
  // linux.namespaces' "network" entry with a path (CNI's, containerd's, podman's): the VM's
  // tap goes there. Empty: no network (no entry, or a new empty namespace).
  std::filesystem::path network_namespace;
  std::map<std::string, std::string> annotations;  // all of them, io.ember.* included
  // `mounts`: the kernel file systems at their usual places are the guest's own; bind mounts of
  // files and read-only directories are copied in (docs/ember-runtime.md, "Mounts").
  std::vector<BundleFile> files;
};

// Reads BUNDLE_DIR/config.json. Any thread; reads files only. Bad input is InvalidArgument
// (NotFound for a missing config.json or rootfs) with a message naming config.json's path and
// the field: "config.json /b/config.json: process.args: empty".
[[nodiscard]] absl::StatusOr<Bundle> LoadBundle(const std::filesystem::path& bundle_dir);

// Reads a process.json as `exec --process` gives it (config.json's process object alone), with
// the same checks and messages as LoadBundle's process.
[[nodiscard]] absl::StatusOr<BundleProcess> LoadProcess(const std::filesystem::path& process_json);

// Parses a Kubernetes-style quantity of bytes ("512Mi", "1G", "1073741824"; units k M G T
// decimal, Ki Mi Gi Ti binary) into MiB, rounded up. InvalidArgument names an unknown unit.
[[nodiscard]] absl::StatusOr<uint64_t> ParseMemoryMib(const std::string& quantity);

}  // namespace ember::runtime
