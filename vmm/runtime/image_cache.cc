#include "vmm/runtime/image_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <nettle/sha2.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <system_error>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "vmm/base/sibling_executable.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

extern char** environ;

namespace ember::runtime {
namespace {

namespace fs = std::filesystem;

// What ember-rootfs says on stderr when it refuses a tree; more is cut.
constexpr size_t kMaxToolMessage = 4096;

class KeyHash {
 public:
  KeyHash() { sha256_init(&ctx_); }
  void Add(absl::string_view bytes) {
    // Each piece with its length, so that ("ab","c") and ("a","bc") differ.
    uint64_t size = bytes.size();
    sha256_update(&ctx_, sizeof size,
                  reinterpret_cast<const uint8_t*>(&size));  // bytes of an integer
    sha256_update(&ctx_, bytes.size(),
                  reinterpret_cast<const uint8_t*>(bytes.data()));  // chars as bytes
  }
  std::string Hex() {
    uint8_t digest[SHA256_DIGEST_SIZE];
    sha256_digest(&ctx_, sizeof digest, digest);
    return absl::BytesToHexString(
        absl::string_view(reinterpret_cast<const char*>(digest), sizeof digest));  // bytes as chars
  }

 private:
  sha256_ctx ctx_;
};

// --- Mounts ---------------------------------------------------------------------------------

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string UnescapeMountField(absl::string_view field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      out += static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 +
                               (field[i + 3] - '0'));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

struct MountEntry {
  std::string fs_type;
  std::string super_options;
};

// The mount at exactly `mount_point` (the last one, if mounts are stacked there), if any.
absl::StatusOr<std::optional<MountEntry>> MountAt(const fs::path& mount_point) {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return base::ErrnoError("open", "/proc/self/mountinfo");
  std::optional<MountEntry> found;
  std::string line;
  while (std::getline(in, line)) {
    // "ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS"
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ');
    if (fields.size() < 10 || UnescapeMountField(fields[4]) != mount_point.string()) continue;
    auto dash = std::find(fields.begin() + 6, fields.end(), "-");
    if (fields.end() - dash < 4) continue;
    found = MountEntry{std::string(dash[1]), UnescapeMountField(dash[3])};
  }
  return found;
}

// Splits on `separator` where it is not escaped by a backslash (overlayfs escapes ',' and ':'
// in its layer paths), removing the escapes.
std::vector<std::string> SplitEscaped(absl::string_view text, char separator) {
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) {
      parts.back() += text[++i];
    } else if (text[i] == separator) {
      parts.emplace_back();
    } else {
      parts.back() += text[i];
    }
  }
  return parts;
}

struct Overlay {
  std::vector<std::string> lower;
  std::string upper;
};

// The layers of an overlayfs mount from its options, or nullopt when they cannot be read as
// absolute paths (podman mounts with paths relative to its storage directory): such a root is
// fingerprinted as a plain tree.
std::optional<Overlay> OverlayLayers(const std::string& super_options) {
  Overlay overlay;
  for (const std::string& option : SplitEscaped(super_options, ',')) {
    if (option.starts_with("lowerdir=")) {
      for (std::string& dir : SplitEscaped(option.substr(9), ':')) overlay.lower.push_back(dir);
    } else if (option.starts_with("lowerdir+=")) {
      overlay.lower.push_back(option.substr(10));
    } else if (option.starts_with("upperdir=")) {
      overlay.upper = option.substr(9);
    }
  }
  if (overlay.lower.empty()) return std::nullopt;
  for (const std::string& dir : overlay.lower) {
    if (dir.empty() || dir.front() != '/') return std::nullopt;
  }
  if (!overlay.upper.empty() && overlay.upper.front() != '/') return std::nullopt;
  return overlay;
}

// --- Stat fingerprints ----------------------------------------------------------------------

absl::Status AddEntry(KeyHash& hash, const std::string& relative, const struct stat& st, int dir_fd,
                      const char* name) {
  std::string record = absl::StrCat(relative, " ", st.st_mode, " ", st.st_uid, " ", st.st_gid);
  if (S_ISREG(st.st_mode)) {
    absl::StrAppend(&record, " ", st.st_size);
    // An empty file's contents are known whatever its time: runtimes make them as mount points.
    if (st.st_size != 0) absl::StrAppend(&record, " ", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec);
  } else if (S_ISLNK(st.st_mode)) {
    std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
    ssize_t n = ::readlinkat(dir_fd, name, target.data(), target.size());
    if (n < 0) return base::ErrnoError("readlinkat", relative);
    target.resize(static_cast<size_t>(n));
    absl::StrAppend(&record, " -> ", target);
  } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
    absl::StrAppend(&record, " ", st.st_rdev);  // overlayfs whiteouts are 0:0 devices
  }
  // A directory's own time changes with its entries, which are here themselves.
  hash.Add(record);
  return absl::OkStatus();
}

// Every entry below the directory open at `dir_fd`, in name order, without following
// symlinks or reading files.
absl::Status FingerprintTree(KeyHash& hash, int dir_fd, const std::string& relative) {
  base::UniqueFd own(::dup(dir_fd));
  if (!own) return base::ErrnoError("dup", relative);
  DIR* dir = ::fdopendir(own.Get());
  if (dir == nullptr) return base::ErrnoError("fdopendir", relative);
  (void)own.Release();  // closedir closes it
  std::vector<std::string> names;
  errno = 0;
  while (dirent* entry = ::readdir(dir)) {
    absl::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  int read_errno = errno;
  ::closedir(dir);
  if (read_errno != 0) return base::ErrnoError(read_errno, "readdir", relative);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    std::string path = absl::StrCat(relative, "/", name);
    struct stat st {};
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return base::ErrnoError("fstatat", path);
    }
    EMBER_RETURN_IF_ERROR(AddEntry(hash, path, st, dir_fd, name.c_str()));
    if (S_ISDIR(st.st_mode)) {
      base::UniqueFd child(
          ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!child) return base::ErrnoError("open", path);
      EMBER_RETURN_IF_ERROR(FingerprintTree(hash, child.Get(), path));
    }
  }
  return absl::OkStatus();
}

absl::Status FingerprintDirectory(KeyHash& hash, const fs::path& dir) {
  base::UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return base::ErrnoError("open", dir.string());
  return FingerprintTree(hash, fd.Get(), "");
}

// A file's identity without reading it: for the guest programs and overlay layers.
absl::Status AddIdentity(KeyHash& hash, const fs::path& path, bool with_inode) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return base::ErrnoError("stat", path.string());
  std::string record =
      absl::StrCat(path.string(), " ", st.st_size, " ", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec);
  if (with_inode) {
    absl::StrAppend(&record, " ", st.st_dev, " ", st.st_ino, " ", st.st_ctim.tv_sec, ".",
                    st.st_ctim.tv_nsec);
  }
  hash.Add(record);
  return absl::OkStatus();
}

// --- Files and locks ------------------------------------------------------------------------

absl::Status MakeDirectory(const fs::path& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return base::ErrnoError("mkdir", dir.string());
  }
  return absl::OkStatus();
}

// An exclusive flock(2) on a file, released when dropped (or when the process dies).
class FileLock {
 public:
  static absl::StatusOr<FileLock> Exclusive(const fs::path& path) {
    base::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) return base::ErrnoError("open", path.string());
    while (::flock(fd.Get(), LOCK_EX) != 0) {
      if (errno != EINTR) return base::ErrnoError("flock", path.string());
    }
    return FileLock(std::move(fd));
  }

 private:
  explicit FileLock(base::UniqueFd fd) : fd_(std::move(fd)) {}
  base::UniqueFd fd_;  // closing it drops the lock
};

std::string RandomToken() {
  std::random_device device;
  return absl::StrCat(
      absl::Hex(static_cast<uint64_t>(device()) << 32 | device(), absl::kZeroPad16));
}

bool IsHexKey(absl::string_view text) {
  return text.size() == 2 * SHA256_DIGEST_SIZE && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// Copies `from` to a new file `to`: a reflink where the file system shares blocks, else the
// data ranges only (the image is sparse), through copy_file_range.
absl::Status CopyImage(const fs::path& from, const fs::path& to) {
  base::UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return base::ErrnoError("open", from.string());
  base::UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out) return base::ErrnoError("open", to.string());
  if (::ioctl(out.Get(), FICLONE, in.Get()) == 0) return absl::OkStatus();
  struct stat st {};
  if (::fstat(in.Get(), &st) != 0) return base::ErrnoError("fstat", from.string());
  if (::ftruncate(out.Get(), st.st_size) != 0) return base::ErrnoError("ftruncate", to.string());
  off_t offset = 0;
  while (offset < st.st_size) {
    off_t data = ::lseek(in.Get(), offset, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole is left
      return base::ErrnoError("lseek(SEEK_DATA)", from.string());
    }
    off_t hole = ::lseek(in.Get(), data, SEEK_HOLE);
    if (hole < 0) return base::ErrnoError("lseek(SEEK_HOLE)", from.string());
    loff_t src = data;
    loff_t dst = data;
    while (src < hole) {
      ssize_t n =
          ::copy_file_range(in.Get(), &src, out.Get(), &dst, static_cast<size_t>(hole - src), 0);
      if (n < 0) return base::ErrnoError("copy_file_range", to.string());
      if (n == 0) return absl::DataLossError(absl::StrCat(from.string(), " shrank while copied"));
    }
    offset = hole;
  }
  return absl::OkStatus();
}

// Runs ember-rootfs and waits for it. Its exit code 2 (bad input) becomes InvalidArgument with
// the line it printed; anything else Internal.
absl::Status RunEmberRootfs(const fs::path& tool, const fs::path& rootfs, const fs::path& image,
                            const fs::path& work_dir) {
  std::vector<std::string> args = {tool.string(), "--format", "dir"};
  if (!work_dir.empty()) {
    args.push_back("--work-dir");
    args.push_back(work_dir.string());
  }
  args.push_back(rootfs.string());
  args.push_back(image.string());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return base::ErrnoError("pipe2");
  base::UniqueFd read_end(pipe_fds[0]);
  base::UniqueFd write_end(pipe_fds[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.Get(), 1);
  posix_spawn_file_actions_adddup2(&actions, write_end.Get(), 2);
  pid_t pid = 0;
  int err = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  write_end.Reset();
  if (err != 0) return base::ErrnoError(err, "posix_spawn", tool.string());

  std::string output;
  char buffer[1024];
  for (;;) {
    ssize_t n = ::read(read_end.Get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (output.size() < kMaxToolMessage) output.append(buffer, static_cast<size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return base::ErrnoError("waitpid", tool.string());
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  while (!output.empty() && output.back() == '\n') output.pop_back();
  if (WIFEXITED(status) && WEXITSTATUS(status) == 2) {
    return absl::InvalidArgumentError(absl::StrCat("rootfs ", rootfs.string(), ": ", output));
  }
  return absl::InternalError(absl::StrCat(tool.string(), " failed (wait status ", status,
                                          ") building ", image.string(), ": ", output));
}

fs::path ToolPath(const ImageCache::Options& options) {
  return options.ember_rootfs.empty() ? fs::path(base::SiblingExecutable("ember-rootfs"))
                                      : options.ember_rootfs;
}

// Removes a lease directory and what is in it (holder, a writable lease's image).
absl::Status RemoveLease(const fs::path& lease) {
  std::error_code ec;
  fs::remove_all(lease, ec);
  if (ec) return absl::InternalError(absl::StrCat("remove ", lease.string(), ": ", ec.message()));
  return absl::OkStatus();
}

// A lease whose holder path is gone (its container's state removed without a Release), or
// which a crashed Acquire left without a holder record.
bool LeaseIsStale(const fs::path& lease) {
  std::ifstream in(lease / "holder");
  if (!in) return true;
  std::string holder;
  std::getline(in, holder);
  if (holder.empty()) return false;
  std::error_code ec;
  return !fs::exists(holder, ec) && !ec;
}

}  // namespace

absl::StatusOr<ImageCache> ImageCache::Open(Options options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("image cache: no directory given");
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("image cache: mkdir ", options.dir.string(), ": ", ec.message()));
  }
  for (const char* sub : {"images", "locks", "leases"}) {
    EMBER_RETURN_IF_ERROR(MakeDirectory(options.dir / sub));
  }
  return ImageCache(std::move(options));
}

absl::StatusOr<std::string> ImageCache::ContentKey(const fs::path& rootfs_dir) const {
  std::error_code ec;
  fs::path root = fs::canonical(rootfs_dir, ec);
  if (ec || !fs::is_directory(root, ec)) {
    return absl::NotFoundError(absl::StrCat("rootfs: no directory at ", rootfs_dir.string()));
  }
  KeyHash hash;
  hash.Add("ember image key v1");
  fs::path tool = ToolPath(options_);
  for (const fs::path& program :
       {tool, tool.parent_path() / "ember-init", tool.parent_path() / "ember-agent"}) {
    EMBER_RETURN_IF_ERROR(AddIdentity(hash, program, /*with_inode=*/false));
  }
  EMBER_ASSIGN_OR_RETURN(std::optional<MountEntry> mount, MountAt(root));
  std::optional<Overlay> overlay;
  if (mount && mount->fs_type == "overlay") overlay = OverlayLayers(mount->super_options);
  if (overlay) {
    hash.Add("overlay");
    for (const std::string& layer : overlay->lower) {
      EMBER_RETURN_IF_ERROR(AddIdentity(hash, layer, /*with_inode=*/true));
    }
    hash.Add("upper");
    if (!overlay->upper.empty()) EMBER_RETURN_IF_ERROR(FingerprintDirectory(hash, overlay->upper));
  } else {
    hash.Add("tree");
    EMBER_RETURN_IF_ERROR(FingerprintDirectory(hash, root));
  }
  return hash.Hex();
}

absl::StatusOr<ImageLease> ImageCache::Acquire(const fs::path& rootfs_dir, bool writable,
                                               const fs::path& holder) {
  EMBER_ASSIGN_OR_RETURN(std::string key, ContentKey(rootfs_dir));
  const fs::path image = options_.dir / "images" / (key + ".ext4");
  EMBER_ASSIGN_OR_RETURN(FileLock lock, FileLock::Exclusive(options_.dir / "locks" / key));
  struct stat st {};
  if (::stat(image.c_str(), &st) != 0) {
    if (errno != ENOENT) return base::ErrnoError("stat", image.string());
    // ember-rootfs writes under a temporary name and renames, so a build killed midway left
    // at most a temporary file (which it removes itself unless SIGKILLed).
    EMBER_RETURN_IF_ERROR(RunEmberRootfs(ToolPath(options_), rootfs_dir, image, options_.work_dir));
  }
  const fs::path key_leases = options_.dir / "leases" / key;
  EMBER_RETURN_IF_ERROR(MakeDirectory(key_leases));
  ImageLease lease;
  std::string token = RandomToken();
  lease.id = absl::StrCat(key, "/", token);
  const fs::path lease_dir = key_leases / token;
  if (::mkdir(lease_dir.c_str(), 0700) != 0) return base::ErrnoError("mkdir", lease_dir.string());
  absl::Status made = [&]() -> absl::Status {
    lease.writable = writable;
    lease.image = image;
    if (writable) {
      lease.image = lease_dir / "root.ext4";
      EMBER_RETURN_IF_ERROR(CopyImage(image, lease.image));
    }
    // Written last: a lease without its holder record is one a crash cut short.
    std::ofstream out(lease_dir / "holder");
    out << holder.string() << "\n";
    out.close();
    if (!out) return base::ErrnoError("write", (lease_dir / "holder").string());
    return absl::OkStatus();
  }();
  if (!made.ok()) {
    (void)RemoveLease(lease_dir);
    return made;
  }
  return lease;
}

absl::Status ImageCache::Release(const std::string& lease_id) {
  std::vector<std::string> parts = absl::StrSplit(lease_id, '/');
  if (parts.size() != 2 || !IsHexKey(parts[0]) || parts[1].empty() ||
      parts[1].find_first_not_of("0123456789abcdef") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("image lease \"", lease_id, "\": malformed"));
  }
  EMBER_ASSIGN_OR_RETURN(FileLock lock, FileLock::Exclusive(options_.dir / "locks" / parts[0]));
  return RemoveLease(options_.dir / "leases" / parts[0] / parts[1]);
}

absl::StatusOr<uint64_t> ImageCache::EvictUnused() {
  uint64_t freed = 0;
  std::error_code ec;
  std::vector<std::string> keys;
  for (const auto& entry : fs::directory_iterator(options_.dir / "images", ec)) {
    std::string name = entry.path().filename().string();
    if (name.ends_with(".ext4") && IsHexKey(name.substr(0, name.size() - 5))) {
      keys.push_back(name.substr(0, name.size() - 5));
    }
  }
  if (ec)
    return absl::InternalError(
        absl::StrCat("list ", (options_.dir / "images").string(), ": ", ec.message()));
  for (const std::string& key : keys) {
    EMBER_ASSIGN_OR_RETURN(FileLock lock, FileLock::Exclusive(options_.dir / "locks" / key));
    const fs::path key_leases = options_.dir / "leases" / key;
    bool leased = false;
    for (const auto& lease : fs::directory_iterator(key_leases, ec)) {
      if (LeaseIsStale(lease.path())) {
        EMBER_RETURN_IF_ERROR(RemoveLease(lease.path()));
      } else {
        leased = true;
      }
    }
    if (leased) continue;
    const fs::path image = options_.dir / "images" / (key + ".ext4");
    struct stat st {};
    if (::stat(image.c_str(), &st) != 0) continue;  // evicted by another process meanwhile
    if (::unlink(image.c_str()) != 0) return base::ErrnoError("unlink", image.string());
    freed += static_cast<uint64_t>(st.st_blocks) * 512;
    ::rmdir(key_leases.c_str());
    // The lock file stays: removing it while another process waits on it would let a third
    // lock a new file of the same name at once.
  }
  return freed;
}

}  // namespace ember::runtime
