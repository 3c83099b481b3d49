#include "vmm/emberd/snapshot_mac.h"

#include <fcntl.h>
#include <nettle/hmac.h>
#include <nettle/memops.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "vmm/base/atomic_file.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::emberd {
namespace {

// Each MAC's input starts with what it is for, so a state MAC never passes for a memory one.
constexpr char kStateLabel[] = "ember snapshot state v1";
constexpr char kMemoryLabel[] = "ember snapshot memory v1";

std::string Hex(const std::uint8_t* bytes, std::size_t size) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string text;
  for (std::size_t i = 0; i < size; ++i) {
    text += kHex[bytes[i] >> 4];
    text += kHex[bytes[i] & 0xf];
  }
  return text;
}

class Hmac {
 public:
  Hmac(const std::string& key, const char* label, const std::string& snapshot_id) {
    // reinterpret_cast: nettle takes bytes as uint8_t.
    hmac_sha256_set_key(&context_, key.size(), reinterpret_cast<const std::uint8_t*>(key.data()));
    // Label and id with their terminating NULs: neither holds one, so the split is unique.
    Update(label, std::strlen(label) + 1);
    Update(snapshot_id.c_str(), snapshot_id.size() + 1);
  }
  void Update(const void* data, std::size_t size) {
    hmac_sha256_update(&context_, size, static_cast<const std::uint8_t*>(data));
  }
  std::string HexDigest() {
    std::uint8_t digest[SHA256_DIGEST_SIZE];
    hmac_sha256_digest(&context_, sizeof digest, digest);
    return Hex(digest, sizeof digest);
  }

 private:
  hmac_sha256_ctx context_;
};

// Opens a snapshot file without blocking (a FIFO would otherwise stall the caller) and checks
// that it is a regular file.
absl::StatusOr<base::UniqueFd> OpenRegular(const std::string& what, const std::string& path,
                                           struct stat* st) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd.Valid()) {
    return absl::InvalidArgumentError("cannot open the " + what + " file " + path + ": " +
                                      std::strerror(errno));
  }
  if (::fstat(fd.Get(), st) != 0) return base::ErrnoError("fstat", path);
  if (!S_ISREG(st->st_mode)) {
    return absl::InvalidArgumentError("the " + what + " file " + path + " is not a regular file");
  }
  return fd;
}

absl::StatusOr<std::string> ReadKey(const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW));
  if (!fd.Valid() && errno == ENOENT) return std::string();
  const std::string fix = "; remove it to have emberd make a new key (snapshots it made "
                          "before then will no longer restore)";
  if (!fd.Valid() && errno == ELOOP) {
    return absl::FailedPreconditionError("snapshot key " + path + " is a symlink, not a regular "
                                         "file" + fix);
  }
  if (!fd.Valid()) return base::ErrnoError("open", path);
  struct stat st {};
  if (::fstat(fd.Get(), &st) != 0) return base::ErrnoError("fstat", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError("snapshot key " + path + " is not a regular file" + fix);
  }
  if ((st.st_mode & 077) != 0 || st.st_uid != ::geteuid()) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    return absl::FailedPreconditionError(
        "snapshot key " + path + " has mode " + mode + " and owner uid " +
        std::to_string(st.st_uid) + ": only emberd's user (uid " + std::to_string(::geteuid()) +
        ") may read it, or anyone who can could forge snapshots; chown it and chmod 600 it, or "
        "remove it if others may have read it (snapshots made before will no longer restore)");
  }
  std::string key(kSnapshotKeySize + 1, '\0');
  ssize_t got = ::read(fd.Get(), key.data(), key.size());
  if (got < 0) return base::ErrnoError("read", path);
  if (static_cast<std::size_t>(got) != kSnapshotKeySize) {
    return absl::FailedPreconditionError("snapshot key " + path + " is not " +
                                         std::to_string(kSnapshotKeySize) + " bytes" + fix);
  }
  key.resize(kSnapshotKeySize);
  return key;
}

absl::StatusOr<std::string> MakeKey(const std::string& path) {
  std::string key(kSnapshotKeySize, '\0');
  if (::getrandom(key.data(), key.size(), 0) != static_cast<ssize_t>(key.size())) {
    return base::ErrnoError("getrandom", path);
  }
  EMBER_ASSIGN_OR_RETURN(base::AtomicFile file, base::AtomicFile::Create(path, 0600));
  EMBER_RETURN_IF_ERROR(file.Append(key));
  EMBER_RETURN_IF_ERROR(file.Commit());
  return key;
}

}  // namespace

absl::StatusOr<SnapshotMac> SnapshotMac::LoadOrCreateKey(const std::string& state_dir) {
  const std::string path = state_dir + "/" + kSnapshotKeyFile;
  EMBER_ASSIGN_OR_RETURN(std::string key, ReadKey(path));
  if (!key.empty()) return SnapshotMac(std::move(key));
  EMBER_ASSIGN_OR_RETURN(std::string made, MakeKey(path));
  return SnapshotMac(std::move(made));
}

absl::StatusOr<SnapshotMac::Tags> SnapshotMac::Compute(const std::string& snapshot_id,
                                                       const std::string& state_path,
                                                       const std::string& memory_path) const {
  struct stat st {};
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd state, OpenRegular("state", state_path, &st));
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd memory, OpenRegular("memory", memory_path, &st));
  return Compute(snapshot_id, {state.Get(), state_path}, {memory.Get(), memory_path});
}

absl::StatusOr<SnapshotMac::Tags> SnapshotMac::Compute(const std::string& snapshot_id,
                                                       const OpenSnapshotFile& state,
                                                       const OpenSnapshotFile& memory) const {
  Tags tags;
  {
    Hmac mac(key_, kStateLabel, snapshot_id);
    char buffer[64 * 1024];
    // From offset 0 whatever the fd's own offset: the same fd is MACed again by a later
    // restore, and handed to VMMs.
    for (off_t offset = 0;;) {
      ssize_t got = ::pread(state.fd, buffer, sizeof buffer, offset);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return base::ErrnoError("read", state.path);
      if (got == 0) break;
      mac.Update(buffer, static_cast<std::size_t>(got));
      offset += got;
    }
    tags.state = mac.HexDigest();
  }
  struct stat st {};
  if (::fstat(memory.fd, &st) != 0) return base::ErrnoError("fstat", memory.path);
  Hmac mac(key_, kMemoryLabel, snapshot_id);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  mac.Update(&size, sizeof size);
  // A file too short for a trailer is MACed by its size alone, which then no longer matches.
  if (size >= kMemoryTrailerBytes) {
    std::uint8_t trailer[kMemoryTrailerBytes];
    ssize_t got = ::pread(memory.fd, trailer, sizeof trailer,
                          static_cast<off_t>(size - kMemoryTrailerBytes));
    if (got < 0) return base::ErrnoError("pread", memory.path);
    mac.Update(trailer, static_cast<std::size_t>(got));
  }
  tags.memory = mac.HexDigest();
  return tags;
}

absl::Status SnapshotMac::Record(const std::string& snapshot_id, const std::string& state_path,
                                 const std::string& memory_path,
                                 const std::string& record_dir) const {
  EMBER_ASSIGN_OR_RETURN(Tags tags, Compute(snapshot_id, state_path, memory_path));
  return WriteTags(tags, record_dir);
}

absl::Status SnapshotMac::Record(const std::string& snapshot_id, const OpenSnapshotFile& state,
                                 const OpenSnapshotFile& memory,
                                 const std::string& record_dir) const {
  EMBER_ASSIGN_OR_RETURN(Tags tags, Compute(snapshot_id, state, memory));
  return WriteTags(tags, record_dir);
}

absl::Status SnapshotMac::WriteTags(const Tags& tags, const std::string& record_dir) {
  EMBER_ASSIGN_OR_RETURN(base::AtomicFile file,
                         base::AtomicFile::Create(record_dir + "/" + kSnapshotMacFile, 0600));
  EMBER_RETURN_IF_ERROR(file.Append("state " + tags.state + "\nmemory " + tags.memory + "\n"));
  return file.Commit();
}

absl::Status SnapshotMac::Verify(const std::string& field, const std::string& snapshot_id,
                                 const std::string& state_path, const std::string& memory_path,
                                 const std::string& record_dir) const {
  struct stat st {};
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd state, OpenRegular("state", state_path, &st));
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd memory, OpenRegular("memory", memory_path, &st));
  return Verify(field, snapshot_id, {state.Get(), state_path}, {memory.Get(), memory_path},
                record_dir);
}

absl::Status SnapshotMac::Verify(const std::string& field, const std::string& snapshot_id,
                                 const OpenSnapshotFile& state, const OpenSnapshotFile& memory,
                                 const std::string& record_dir) const {
  const std::string& state_path = state.path;
  const std::string& memory_path = memory.path;
  const std::string path = record_dir + "/" + kSnapshotMacFile;
  const std::string refused = field + ": snapshot \"" + snapshot_id + "\" ";
  std::string recorded(256, '\0');
  {
    base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW));
    if (!fd.Valid()) {
      return absl::FailedPreconditionError(
          refused + "has no MAC recorded (" + path + ": " + std::strerror(errno) +
          "; a snapshot finished while emberd was down, or made by an emberd without snapshot "
          "MACs, has none), so emberd cannot tell that its files are the ones it wrote; refusing "
          "to restore it. If you vouch for its files as they are now, seal them: emberctl "
          "trust-snapshot " + snapshot_id + " (TrustSnapshot)");
    }
    ssize_t got = ::read(fd.Get(), recorded.data(), recorded.size());
    if (got < 0) return base::ErrnoError("read", path);
    recorded.resize(static_cast<std::size_t>(got));
  }
  EMBER_ASSIGN_OR_RETURN(Tags tags, Compute(snapshot_id, state, memory));
  const std::string expected_state = "state " + tags.state + "\n";
  const std::string expected_memory = "memory " + tags.memory + "\n";
  if (recorded.size() != expected_state.size() + expected_memory.size()) {
    return absl::FailedPreconditionError(refused + "has a damaged MAC record " + path +
                                         "; refusing to restore it");
  }
  // Compared in constant time: a timing difference would tell a forger how much was right.
  if (!memeql_sec(recorded.data(), expected_state.data(), expected_state.size())) {
    return absl::FailedPreconditionError(
        refused + "was changed after emberd wrote it: its state file " + state_path +
        " no longer matches its MAC; refusing to restore it");
  }
  if (!memeql_sec(recorded.data() + expected_state.size(), expected_memory.data(),
                  expected_memory.size())) {
    return absl::FailedPreconditionError(
        refused + "was changed after emberd wrote it: its memory file " + memory_path +
        " no longer has the size and snapshot id (trailer) emberd recorded; refusing to "
        "restore it");
  }
  return absl::OkStatus();
}

absl::Status SnapshotMac::Seal(const std::string& field, const std::string& snapshot_id,
                               const std::string& state_path, const std::string& memory_path,
                               const std::string& record_dir) const {
  struct stat st {};
  const std::string path = record_dir + "/" + kSnapshotMacFile;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return base::ErrnoError("lstat", path);
    return Record(snapshot_id, state_path, memory_path, record_dir);
  }
  absl::Status verified = Verify(field, snapshot_id, state_path, memory_path, record_dir);
  if (verified.ok() || verified.code() != absl::StatusCode::kFailedPrecondition) return verified;
  return absl::FailedPreconditionError(
      std::string(verified.message()) + ". Trust seals only a snapshot that has no MAC: this "
      "one's files changed after emberd sealed them, and emberd does not vouch for the change");
}

}  // namespace ember::emberd
