#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ember/v1/api.pb.h"

namespace ember::emberd {

// What DeleteSnapshot must know of one VM emberd keeps: whether it still needs a snapshot.
struct SnapshotUser {
  std::string vm_id;
  v1::Vm::State state = v1::Vm::STATE_UNSPECIFIED;
  std::string restored_from;   // v1::Vm::restored_from: a snapshot_id or a state path
  std::string next_diff_base;  // the snapshot its next DIFF snapshot applies onto, or empty
  bool tracks_dirty_pages = false;
};

// The snapshots emberd keeps: one record directory per snapshot under
// <state_dir>/snapshots/<snapshot_id>/ (snapshot.json, the VM's vm_config.json, and the files
// themselves unless the caller named another directory), their ids, and the rules for
// deleting one. A snapshot being written has pending.json instead of snapshot.json, so that
// an emberd killed meanwhile finds it on its next start (Load). Any thread; one mutex guards
// the records.
class SnapshotCatalog {
 public:
  // Creates <state_dir>/snapshots if needed.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<SnapshotCatalog>> Create(
      std::string state_dir);

  // Reads the records a previous emberd left. A snapshot it left pending is recorded if both
  // its files are complete (an ember-vmm renames each into place only once written), else
  // removed with whatever it left (RemoveUnfinished). Called once, before any other call.
  void Load();

  [[nodiscard]] std::string RecordDir(const std::string& snapshot_id) const;

  // A new id for a snapshot of `vm_id` ("<vm_id>-<unix ms>[-n]"), unique even for two snapshots
  // within a millisecond and unused on disk; reserved (not listed, not restorable) until
  // Commit or Unreserve.
  [[nodiscard]] std::string Reserve(const std::string& vm_id, std::int64_t now_unix_ms);
  void Unreserve(const std::string& snapshot_id);
  // Records a reserved snapshot, begun with Begin, whose files are complete: writes
  // snapshot.json into its record directory in place of pending.json.
  [[nodiscard]] absl::Status Commit(const v1::Snapshot& snapshot);

  // A finished snapshot, or NOT_FOUND / FAILED_PRECONDITION (still being written) naming the
  // field `field`.
  [[nodiscard]] absl::StatusOr<v1::Snapshot> Get(const std::string& snapshot_id,
                                                 const std::string& field = "snapshot_id") const;
  // The id of the finished snapshot whose files these are, or empty.
  [[nodiscard]] std::string FindByFiles(const std::string& state_path,
                                        const std::string& memory_path) const;
  // The finished snapshots (all, or `vm_id`'s), sorted by snapshot_id.
  [[nodiscard]] std::vector<v1::Snapshot> List(const std::string& vm_id) const;
  // What a VM created at `created_unix_ms` applies its next DIFF snapshot onto after a restart:
  // its latest snapshot (one of an earlier VM of the same id is older than the VM), else the
  // snapshot it was restored from (`restored_from`: an id or a state path). Empty if none.
  [[nodiscard]] std::string NextDiffBase(const std::string& vm_id, std::int64_t created_unix_ms,
                                         const std::string& restored_from) const;

  // While a restore may still open the snapshot's files, Delete refuses: BeginRestore
  // counts one in (NOT_FOUND if there is no such finished snapshot), EndRestore out.
  [[nodiscard]] absl::Status BeginRestore(const std::string& snapshot_id);
  void EndRestore(const std::string& snapshot_id);

  // Before a reserved snapshot is written: the directory of its files (the record directory,
  // or the caller's) must not hold a snapshot already (ALREADY_EXISTS naming snapshot_dir);
  // creates it and the record directory, and writes the VM's `config` (what a restore needs)
  // and the pending record there.
  [[nodiscard]] absl::Status Begin(const v1::Snapshot& snapshot, const v1::VmConfig& config) const;
  // After a failed snapshot whose VMM has ended: removes its record directory and, in a
  // caller's directory, what the snapshot may have left there (its state and memory files,
  // the temporary files of an ember-vmm killed while writing them, the directory itself if
  // that emptied it). Anything else there is the caller's.
  void RemoveUnfinished(const v1::Snapshot& snapshot) const;

  // Deleting a snapshot (api.proto DeleteSnapshot) in two steps, so that a caller can hold
  // its own lock over what `users` says while the rules are checked, and not while files go:
  // Take drops the record unless a restore in progress, a DIFF snapshot of the catalog or one
  // of `users` still needs the snapshot; Remove then removes its files and record directory
  // (on failure the record is back, and a second Delete tries again).
  [[nodiscard]] absl::StatusOr<v1::Snapshot> Take(const std::string& snapshot_id,
                                                  const std::vector<SnapshotUser>& users);
  [[nodiscard]] absl::Status Remove(const v1::Snapshot& taken);

 private:
  explicit SnapshotCatalog(std::string state_dir) : state_dir_(std::move(state_dir)) {}
  // Why `snapshot_id` may not be deleted now, or OK. mu_ held.
  [[nodiscard]] absl::Status CheckDeletable(const std::string& snapshot_id,
                                            const v1::Snapshot& snapshot,
                                            const std::vector<SnapshotUser>& users) const;
  // `marked`: its record is deleting.json already (Load), else snapshot.json is renamed so.
  [[nodiscard]] absl::Status RemoveFiles(const v1::Snapshot& snapshot, bool marked) const;
  // Load's decision on a snapshot a previous emberd left pending. mu_ held.
  void Reconcile(const v1::Snapshot& pending);

  const std::string state_dir_;
  mutable std::mutex mu_;
  // Reserved snapshots have an empty record (no state_path) until committed.
  std::map<std::string, v1::Snapshot> snapshots_;  // guarded by mu_
  std::map<std::string, int> restoring_;           // guarded by mu_
};

}  // namespace ember::emberd
