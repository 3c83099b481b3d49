#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ember::emberd {

// The key file in emberd's state directory: 32 random bytes, mode 0600, made at first start.
inline constexpr char kSnapshotKeyFile[] = "snapshot.key";
// The MACs of one snapshot, in its record directory (snapshot_catalog.h).
inline constexpr char kSnapshotMacFile[] = "snapshot.mac";
inline constexpr std::size_t kSnapshotKeySize = 32;
// snapshot/memory_file.h's kMemoryTrailerSize (emberd may not include snapshot/; the unit test
// checks that the two agree): the memory file's last bytes, holding its memory size and the
// snapshot id.
inline constexpr std::size_t kMemoryTrailerBytes = 48;

// Authenticates the snapshots emberd makes, so that a restore refuses files changed since:
// an HMAC-SHA256 under emberd's own key over the whole state file (which decides which host
// files a restoring VMM opens), and another over the memory file's trailer and size (its
// snapshot id and memory size) but not its contents, which are guest data: hashing GiBs would
// cost restore its speed, and a changed byte of guest memory is the guest's own business.
// Each MAC also covers emberd's snapshot id, so one snapshot's files never pass for another's.
// Immutable after creation; any thread.
class SnapshotMac {
 public:
  // Reads <state_dir>/snapshot.key, or creates it (mode 0600) if there is none. Refuses
  // (FAILED_PRECONDITION naming the file and the fix) a key that is not a regular file (a
  // symlink too), is readable or writable by group or others, belongs to another user or is
  // not kSnapshotKeySize bytes: anyone who can read it can forge snapshots. Called at start,
  // before emberd's seccomp filter.
  [[nodiscard]] static absl::StatusOr<SnapshotMac> LoadOrCreateKey(const std::string& state_dir);

  // For tests: a MAC under `key`.
  explicit SnapshotMac(std::string key) : key_(std::move(key)) {}

  // Writes the MACs of snapshot `snapshot_id`'s files to <record_dir>/snapshot.mac (a new file
  // renamed into place). Called once its files are complete and final.
  [[nodiscard]] absl::Status Record(const std::string& snapshot_id, const std::string& state_path,
                                    const std::string& memory_path,
                                    const std::string& record_dir) const;

  // OK when the files still match what Record wrote; otherwise FAILED_PRECONDITION starting
  // with `field` and naming the file that changed (the state file, or the memory file's size
  // and snapshot id), or that no MAC was recorded. A file that cannot be opened or is not a
  // regular file is INVALID_ARGUMENT. Reads the whole state file and the memory file's last
  // kMemoryTrailerBytes; never blocks on a FIFO.
  [[nodiscard]] absl::Status Verify(const std::string& field, const std::string& snapshot_id,
                                    const std::string& state_path, const std::string& memory_path,
                                    const std::string& record_dir) const;

  // A snapshot file emberd holds open: `fd` borrowed, `path` for messages only.
  struct OpenSnapshotFile {
    int fd = -1;
    std::string path;
  };
  // Verify of the very files a restore holds open and hands to its VMMs (restore_plan.h), not
  // of whatever their names lead to by then. Reads them with pread from offset 0.
  [[nodiscard]] absl::Status Verify(const std::string& field, const std::string& snapshot_id,
                                    const OpenSnapshotFile& state,
                                    const OpenSnapshotFile& memory,
                                    const std::string& record_dir) const;
  // Record of the very files emberd holds open (those its VMM wrote in the directory emberd
  // handed it), not of whatever their names lead to by then.
  [[nodiscard]] absl::Status Record(const std::string& snapshot_id, const OpenSnapshotFile& state,
                                    const OpenSnapshotFile& memory,
                                    const std::string& record_dir) const;

  // The operator's word for a snapshot that has no MAC (made before emberd had snapshot MACs,
  // or finished while emberd was down and recorded from its pending record): records the MACs
  // of its files as they are now (Record), so that Verify passes from then on. OK at once for a
  // snapshot whose MAC its files still match. FAILED_PRECONDITION, starting with `field`, for
  // one whose files no longer match their MAC: a changed snapshot is never sealed anew.
  [[nodiscard]] absl::Status Seal(const std::string& field, const std::string& snapshot_id,
                                  const std::string& state_path, const std::string& memory_path,
                                  const std::string& record_dir) const;

 private:
  struct Tags {
    std::string state;   // hex
    std::string memory;  // hex
  };
  [[nodiscard]] absl::StatusOr<Tags> Compute(const std::string& snapshot_id,
                                             const std::string& state_path,
                                             const std::string& memory_path) const;
  [[nodiscard]] absl::StatusOr<Tags> Compute(const std::string& snapshot_id,
                                             const OpenSnapshotFile& state,
                                             const OpenSnapshotFile& memory) const;

  [[nodiscard]] static absl::Status WriteTags(const Tags& tags, const std::string& record_dir);

  std::string key_;
};

}  // namespace ember::emberd
