#include "vmm/emberd/snapshot_catalog.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <tuple>
#include <vector>

#include "vmm/base/atomic_file.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"
#include "vmm/emberd/store.h"

namespace ember::emberd {

namespace {

const char* StateName(v1::Vm::State state) { return v1::Vm::State_Name(state).c_str(); }

constexpr char kRecordFile[] = "/snapshot.json";
constexpr char kPendingFile[] = "/pending.json";
// A snapshot being deleted: its record renamed, so that an emberd killed while the files go
// finds no record of files that are gone, and finishes the deletion on its next start.
constexpr char kDeletingFile[] = "/deleting.json";

}  // namespace

absl::StatusOr<std::unique_ptr<SnapshotCatalog>> SnapshotCatalog::Create(std::string state_dir) {
  std::string dir = state_dir + "/snapshots";
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return base::ErrnoError("mkdir", dir);
  return std::unique_ptr<SnapshotCatalog>(new SnapshotCatalog(std::move(state_dir)));
}

std::string SnapshotCatalog::RecordDir(const std::string& snapshot_id) const {
  return state_dir_ + "/snapshots/" + snapshot_id;
}

void SnapshotCatalog::Load() {
  std::error_code error;
  std::lock_guard lock(mu_);
  for (auto it = std::filesystem::directory_iterator(state_dir_ + "/snapshots", error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    const std::string dir = it->path().string();
    v1::Snapshot snapshot;
    if (ReadMessageJson(dir + kRecordFile, &snapshot).ok()) {
      snapshots_[snapshot.snapshot_id()] = snapshot;
    } else if (ReadMessageJson(dir + kPendingFile, &snapshot).ok() &&
               RecordDir(snapshot.snapshot_id()) == dir) {
      Reconcile(snapshot);
    } else if (ReadMessageJson(dir + kDeletingFile, &snapshot).ok() &&
               RecordDir(snapshot.snapshot_id()) == dir) {
      if (absl::Status status = RemoveFiles(snapshot, /*marked=*/true); !status.ok()) {
        EMBER_LOG(kWarn) << "emberd: snapshot " << snapshot.snapshot_id()
                         << " was being deleted by an earlier emberd: " << status.message();
      } else {
        EMBER_LOG(kInfo) << "emberd: snapshot " << snapshot.snapshot_id()
                         << ", which an earlier emberd was deleting, is deleted";
      }
    } else if (::access((dir + kRecordFile).c_str(), F_OK) != 0 &&
               ::access((dir + kPendingFile).c_str(), F_OK) != 0 &&
               ::access((dir + kDeletingFile).c_str(), F_OK) != 0) {
      // Begin made it but was cut short before its pending record: nothing to finish.
      (void)RemoveTree(dir);
      EMBER_LOG(kInfo) << "emberd: removed " << dir << ", a snapshot begun but never recorded";
    }
  }
}

void SnapshotCatalog::Reconcile(const v1::Snapshot& pending) {
  const std::string dir = RecordDir(pending.snapshot_id());
  const bool complete = ::access(pending.state_path().c_str(), F_OK) == 0 &&
                        ::access(pending.memory_path().c_str(), F_OK) == 0;
  if (complete && WriteMessageJson(dir + kRecordFile, pending).ok()) {
    ::unlink((dir + kPendingFile).c_str());
    snapshots_[pending.snapshot_id()] = pending;
    EMBER_LOG(kInfo) << "emberd: snapshot " << pending.snapshot_id()
                     << " was finished after an earlier emberd ended; recorded";
    return;
  }
  RemoveUnfinished(pending);
  EMBER_LOG(kInfo) << "emberd: snapshot " << pending.snapshot_id()
                   << " was left unfinished by an earlier emberd; its files are removed";
}

std::string SnapshotCatalog::Reserve(const std::string& vm_id, std::int64_t now_unix_ms) {
  std::lock_guard lock(mu_);
  std::string base = vm_id + "-" + std::to_string(now_unix_ms);
  std::string id = base;
  for (int n = 1; snapshots_.count(id) != 0 || ::access(RecordDir(id).c_str(), F_OK) == 0; ++n) {
    id = base + "-" + std::to_string(n);
  }
  snapshots_[id];
  return id;
}

void SnapshotCatalog::Unreserve(const std::string& snapshot_id) {
  std::lock_guard lock(mu_);
  snapshots_.erase(snapshot_id);
}

absl::Status SnapshotCatalog::Commit(const v1::Snapshot& snapshot) {
  const std::string dir = RecordDir(snapshot.snapshot_id());
  EMBER_RETURN_IF_ERROR(WriteMessageJson(dir + kRecordFile, snapshot));
  ::unlink((dir + kPendingFile).c_str());
  std::lock_guard lock(mu_);
  snapshots_[snapshot.snapshot_id()] = snapshot;
  return absl::OkStatus();
}

absl::StatusOr<v1::Snapshot> SnapshotCatalog::Get(const std::string& snapshot_id,
                                                  const std::string& field) const {
  std::lock_guard lock(mu_);
  auto it = snapshots_.find(snapshot_id);
  if (it == snapshots_.end()) {
    return absl::NotFoundError(field + ": no snapshot \"" + snapshot_id + "\"");
  }
  if (it->second.state_path().empty()) {
    return absl::FailedPreconditionError(field + ": snapshot \"" + snapshot_id +
                                         "\" is still being written");
  }
  return it->second;
}

std::string SnapshotCatalog::FindByFiles(const std::string& state_path,
                                         const std::string& memory_path) const {
  std::lock_guard lock(mu_);
  std::string found;
  for (const auto& [id, snapshot] : snapshots_) {
    if (snapshot.state_path() == state_path && snapshot.memory_path() == memory_path) found = id;
  }
  return found;
}

std::vector<v1::Snapshot> SnapshotCatalog::List(const std::string& vm_id) const {
  std::lock_guard lock(mu_);
  std::vector<v1::Snapshot> out;
  for (const auto& [id, snapshot] : snapshots_) {
    if (snapshot.state_path().empty()) continue;  // still being written
    if (!vm_id.empty() && snapshot.vm_id() != vm_id) continue;
    out.push_back(snapshot);
  }
  return out;
}

std::string SnapshotCatalog::NextDiffBase(const std::string& vm_id, std::int64_t created_unix_ms,
                                          const std::string& restored_from) const {
  std::lock_guard lock(mu_);
  const v1::Snapshot* latest = nullptr;
  for (const auto& [id, snapshot] : snapshots_) {
    if (snapshot.state_path().empty() || snapshot.vm_id() != vm_id ||
        snapshot.created_unix_ms() < created_unix_ms) {
      continue;
    }
    // Later, else the longer id ("-n" suffixes), else the greater: the last one taken.
    if (latest == nullptr ||
        std::make_tuple(snapshot.created_unix_ms(), id.size(), id) >
            std::make_tuple(latest->created_unix_ms(), latest->snapshot_id().size(),
                            latest->snapshot_id())) {
      latest = &snapshot;
    }
  }
  if (latest != nullptr) return latest->snapshot_id();
  std::string found;
  for (const auto& [id, snapshot] : snapshots_) {
    if (!restored_from.empty() &&
        (restored_from == id || restored_from == snapshot.state_path())) {
      found = id;
    }
  }
  return found;
}

absl::Status SnapshotCatalog::Begin(const v1::Snapshot& snapshot,
                                    const v1::VmConfig& config) const {
  const std::string dir = std::filesystem::path(snapshot.state_path()).parent_path().string();
  // A caller's directory may already hold a snapshot: writing over it would pull the memory
  // from under the clones restored from it and silently change what its record restores.
  for (const std::string& path : {snapshot.state_path(), snapshot.memory_path()}) {
    if (::access(path.c_str(), F_OK) == 0) {
      return absl::AlreadyExistsError(
          "snapshot_dir: " + dir + " already holds a snapshot (" + path +
          "); choose another directory, or DeleteSnapshot the one there first");
    }
  }
  // ember-vmm writes into the directory; emberd's record (snapshot.json and the VM's
  // config, which a restore needs) always lives under the state directory.
  const std::string record_dir = RecordDir(snapshot.snapshot_id());
  // The caller's directories that Begin makes, deepest first: only these go again on failure.
  std::vector<std::filesystem::path> made;
  for (std::filesystem::path p = dir; !p.empty() && p != p.parent_path() &&
                                      !std::filesystem::exists(p);
       p = p.parent_path()) {
    made.push_back(p);
  }
  for (const std::string& d : {dir, record_dir}) {
    std::error_code error;
    std::filesystem::create_directories(d, error);
    if (error) {
      return absl::InternalError("cannot create snapshot directory " + d + ": " +
                                 error.message());
    }
  }
  absl::Status status = WriteMessageJson(record_dir + "/vm_config.json", config);
  if (status.ok()) status = WriteMessageJson(record_dir + kPendingFile, snapshot);
  if (!status.ok()) {
    // emberd's disk full: nothing of a snapshot that never began (the caller's directories go
    // only if this made them, and so they are empty).
    (void)RemoveTree(record_dir);
    if (dir != record_dir) {
      for (const std::filesystem::path& p : made) (void)::rmdir(p.c_str());
    }
  }
  return status;
}

void SnapshotCatalog::RemoveUnfinished(const v1::Snapshot& snapshot) const {
  const std::string record_dir = RecordDir(snapshot.snapshot_id());
  (void)RemoveTree(record_dir);
  const std::string dir = std::filesystem::path(snapshot.state_path()).parent_path().string();
  if (dir == record_dir) return;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (name == "state" || name == "memory" || base::IsAtomicFileTemp(name, "state") ||
        base::IsAtomicFileTemp(name, "memory")) {
      ::unlink(entry.path().c_str());
    }
  }
  ::rmdir(dir.c_str());  // fails, leaving it, unless empty
}

absl::Status SnapshotCatalog::BeginRestore(const std::string& snapshot_id) {
  std::lock_guard lock(mu_);
  if (snapshots_.count(snapshot_id) == 0) {
    return absl::NotFoundError("snapshot_id: no snapshot \"" + snapshot_id + "\"");
  }
  ++restoring_[snapshot_id];
  return absl::OkStatus();
}

void SnapshotCatalog::EndRestore(const std::string& snapshot_id) {
  std::lock_guard lock(mu_);
  if (--restoring_[snapshot_id] <= 0) restoring_.erase(snapshot_id);
}

absl::Status SnapshotCatalog::CheckDeletable(const std::string& snapshot_id,
                                             const v1::Snapshot& snapshot,
                                             const std::vector<SnapshotUser>& users) const {
  const std::string quoted = "snapshot \"" + snapshot_id + "\"";
  if (snapshot.state_path().empty()) {
    return absl::FailedPreconditionError("snapshot_id: " + quoted + " is still being written");
  }
  if (auto r = restoring_.find(snapshot_id); r != restoring_.end() && r->second > 0) {
    return absl::FailedPreconditionError("snapshot_id: " + quoted +
                                         " is being restored; try again when that is done");
  }
  for (const auto& [id, other] : snapshots_) {
    if (other.base_snapshot_id() == snapshot_id) {
      return absl::FailedPreconditionError(
          "snapshot_id: DIFF snapshot \"" + id + "\" applies onto " + quoted +
          "; delete it first (or fold it into a full snapshot with ember-snapshot merge)");
    }
  }
  for (const SnapshotUser& user : users) {
    if (user.state == v1::Vm::STOPPED) continue;
    const std::string vm = "VM \"" + user.vm_id + "\" (" + StateName(user.state) + ")";
    if (user.restored_from == snapshot_id || user.restored_from == snapshot.state_path()) {
      return absl::FailedPreconditionError("snapshot_id: " + vm + " was restored from " + quoted +
                                           " and still reads its memory file; stop it first");
    }
    if (user.next_diff_base == snapshot_id && user.tracks_dirty_pages) {
      return absl::FailedPreconditionError(
          "snapshot_id: " + vm + " would apply its next DIFF snapshot onto " + quoted +
          "; take a FULL snapshot of it, or stop it, first");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Snapshot> SnapshotCatalog::Take(const std::string& snapshot_id,
                                                   const std::vector<SnapshotUser>& users) {
  std::lock_guard lock(mu_);
  auto it = snapshots_.find(snapshot_id);
  if (it == snapshots_.end()) {
    return absl::NotFoundError("snapshot_id: no snapshot \"" + snapshot_id + "\"");
  }
  EMBER_RETURN_IF_ERROR(CheckDeletable(snapshot_id, it->second, users));
  v1::Snapshot snapshot = std::move(it->second);
  snapshots_.erase(it);
  return snapshot;
}

absl::Status SnapshotCatalog::Remove(const v1::Snapshot& taken) {
  if (absl::Status status = RemoveFiles(taken, /*marked=*/false); !status.ok()) {
    std::lock_guard lock(mu_);
    snapshots_[taken.snapshot_id()] = taken;
    return absl::InternalError("snapshot_id: " + std::string(status.message()));
  }
  EMBER_LOG(kInfo) << "emberd: snapshot " << taken.snapshot_id() << " deleted";
  return absl::OkStatus();
}

absl::Status SnapshotCatalog::RemoveFiles(const v1::Snapshot& snapshot, bool marked) const {
  const std::string record_dir = RecordDir(snapshot.snapshot_id());
  // The record is marked first, the files go next, the record directory last: if emberd dies
  // in between, its next start finds the mark and finishes (Load). A second Delete after a
  // failure here finds the mark already made.
  if (!marked && ::rename((record_dir + kRecordFile).c_str(),
                          (record_dir + kDeletingFile).c_str()) != 0 &&
      !(errno == ENOENT && ::access((record_dir + kDeletingFile).c_str(), F_OK) == 0)) {
    return base::ErrnoError("rename", record_dir + kRecordFile);
  }
  // The files go from the snapshot's directory as opened now, never through a symlink: one
  // swapped in for it would have root remove these names wherever it leads. Such a directory
  // (or one already gone) holds none of the snapshot's files; the record goes all the same.
  const std::string dir = std::filesystem::path(snapshot.state_path()).parent_path().string();
  base::UniqueFd dir_fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir_fd && errno != ENOENT && errno != ELOOP && errno != ENOTDIR) {
    return base::ErrnoError("open", dir);
  }
  if (!dir_fd && errno != ENOENT) {
    EMBER_LOG(kWarn) << "emberd: snapshot " << snapshot.snapshot_id() << ": " << dir
                     << " is no longer a directory; whatever it leads to is left alone";
  }
  if (dir_fd) {
    for (const std::string& path :
         {snapshot.state_path(), snapshot.memory_path(), snapshot.memory_path() + ".ws"}) {
      const std::string name = std::filesystem::path(path).filename().string();
      if (::unlinkat(dir_fd.Get(), name.c_str(), 0) != 0 && errno != ENOENT) {
        return base::ErrnoError("unlink", path);
      }
    }
    // A caller's snapshot_dir goes too once empty (and still the one opened); whatever else is
    // in it stays.
    struct stat opened {}, named {};
    if (dir != record_dir && ::fstat(dir_fd.Get(), &opened) == 0 &&
        ::lstat(dir.c_str(), &named) == 0 && opened.st_dev == named.st_dev &&
        opened.st_ino == named.st_ino) {
      (void)::rmdir(dir.c_str());
    }
  }
  return RemoveTree(record_dir);
}

}  // namespace ember::emberd
