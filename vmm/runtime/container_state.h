#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ember::runtime {

// What `create` records about a container, in ROOT/ID/state.json (0600, replaced atomically).
// The supervisor process is the container while it lives; this record is what outlives it
// until `delete`.
struct ContainerRecord {
  std::string id;
  std::string bundle;   // absolute
  std::string rootfs;   // absolute, the bundle's root.path resolved
  std::string created;  // RFC 3339
  pid_t pid = 0;        // the supervisor (what --pid-file names)
  // Its start time (field 22 of /proc/PID/stat): a pid reused by another process is not it.
  std::uint64_t pid_start = 0;
  std::map<std::string, std::string> annotations;
  std::string image_lease;  // the image the VM boots, as ImageCache::Acquire leased it
  std::string netns_path;   // the bundle's network namespace, where the tap lives ("" none)
  std::string tap_name;     // "" without a network
  // A jailed VM's (jail.h): its jail directory ("" unjailed), the uid lease its VMM runs
  // under and that uid, and the cgroup directories the jailer made for it.
  std::string jail_dir;
  std::string jail_uid_lease;
  std::uint32_t jail_uid = 0;
  std::vector<std::string> cgroup_dirs;
};

// The OCI statuses, as `state` prints them.
enum class ContainerStatus { kCreating, kCreated, kRunning, kPaused, kStopped };
[[nodiscard]] const char* StatusName(ContainerStatus status);

// runc's rule for container ids: letters, digits, '_', '+', '-', '.', not "." or "..", at
// most 1024 bytes.
[[nodiscard]] absl::Status ValidateId(const std::string& id);

// The `--root` directory and the containers in it. Any process; not locked: runc's callers
// serialise the commands for one container themselves.
class StateRoot {
 public:
  explicit StateRoot(std::string root) : root_(std::move(root)) {}

  [[nodiscard]] const std::string& path() const { return root_; }
  [[nodiscard]] std::string ContainerDir(const std::string& id) const { return root_ + "/" + id; }
  // Files of one container's directory.
  [[nodiscard]] std::string RecordPath(const std::string& id) const;
  [[nodiscard]] std::string SupervisorSocket(const std::string& id) const;  // commands
  [[nodiscard]] std::string VsockPath(const std::string& id) const;   // ember-vmm's vsock backend
  [[nodiscard]] std::string VmmLogPath(const std::string& id) const;  // the VMM's output

  // Makes ROOT (0700) if missing and ROOT/ID, which must not exist: AlreadyExists, in runc's
  // words, when it does.
  [[nodiscard]] absl::Status CreateContainerDir(const std::string& id) const;
  // NotFound in runc's words ("container does not exist") when there is no such container.
  [[nodiscard]] absl::StatusOr<ContainerRecord> Load(const std::string& id) const;
  [[nodiscard]] absl::Status Save(const ContainerRecord& record) const;
  // Removes ROOT/ID and all in it.
  [[nodiscard]] absl::Status Remove(const std::string& id) const;
  // The ids of the containers under ROOT, sorted.
  [[nodiscard]] std::vector<std::string> List() const;

 private:
  std::string root_;
};

// The record as JSON, and back (InvalidArgument naming what is wrong).
[[nodiscard]] std::string RecordToJson(const ContainerRecord& record);
[[nodiscard]] absl::StatusOr<ContainerRecord> RecordFromJson(const std::string& json);

// The OCI runtime spec's state object, as runc's `state` prints it (pid 0 once stopped).
[[nodiscard]] std::string OciStateJson(const ContainerRecord& record, ContainerStatus status);

// Field 22 of /proc/PID/stat (start time in clock ticks); nullopt when no such process.
[[nodiscard]] std::optional<std::uint64_t> ProcessStartTime(pid_t pid);
// Whether the record's supervisor still runs (same pid, same start time).
[[nodiscard]] bool SupervisorAlive(const ContainerRecord& record);

}  // namespace ember::runtime
