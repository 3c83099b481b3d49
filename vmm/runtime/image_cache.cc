#include "vmm/runtime/image_cache.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <random>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "vmm/base/sibling_executable.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"
#include "vmm/runtime/image_cache_key.h"

extern char** environ;

namespace ember::runtime {
namespace {

namespace fs = std::filesystem;

// What ember-rootfs says on stderr when it refuses a tree; more is cut.
constexpr size_t kMaxToolMessage = 4096;

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

// A key as RootfsContentKey makes it: a hex SHA-256.
bool IsHexKey(absl::string_view text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
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
  fs::path tool = ToolPath(options_);
  return RootfsContentKey(
      rootfs_dir, {tool, tool.parent_path() / "ember-init", tool.parent_path() / "ember-agent"});
}

absl::StatusOr<ImageLease> ImageCache::Acquire(const fs::path& rootfs_dir, bool writable,
                                               const fs::path& holder) {
  EMBER_ASSIGN_OR_RETURN(std::string key, ContentKey(rootfs_dir));
  const fs::path image = options_.dir / "images" / (key + ".ext4");
  bool built = false;
  absl::StatusOr<ImageLease> lease = [&]() -> absl::StatusOr<ImageLease> {
    EMBER_ASSIGN_OR_RETURN(FileLock lock, FileLock::Exclusive(options_.dir / "locks" / key));
    struct stat st {};
    if (::stat(image.c_str(), &st) != 0) {
      if (errno != ENOENT) return base::ErrnoError("stat", image.string());
      // ember-rootfs writes under a temporary name and renames, so a build killed midway
      // left at most a temporary file (which it removes itself unless SIGKILLed).
      EMBER_RETURN_IF_ERROR(
          RunEmberRootfs(ToolPath(options_), rootfs_dir, image, options_.work_dir));
      built = true;
    }
    return LeaseLocked(key, image, writable, holder);
  }();
  // A build is when the cache grows: only then, and with the key's lock released (eviction
  // takes each key's lock in turn), are the least recently used unleased images beyond
  // kKeptUnusedImages removed. Best effort: the lease is made either way.
  if (lease.ok() && built) (void)EvictUnused(kKeptUnusedImages);
  return lease;
}

absl::StatusOr<ImageLease> ImageCache::LeaseLocked(const std::string& key, const fs::path& image,
                                                   bool writable, const fs::path& holder) {
  const fs::path key_leases = options_.dir / "leases" / key;
  EMBER_RETURN_IF_ERROR(MakeDirectory(key_leases));
  ImageLease lease;
  std::string token = RandomToken();
  lease.id = (key_leases / token).string();
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
  // CACHE/leases/KEY/TOKEN: the cache is the one the lease names, not this one's directory.
  const fs::path lease(lease_id);
  const std::string token = lease.filename().string();
  const std::string key = lease.parent_path().filename().string();
  const fs::path leases = lease.parent_path().parent_path();
  if (!lease.is_absolute() || lease.lexically_normal() != lease || leases.filename() != "leases" ||
      !IsHexKey(key) || token.empty() ||
      token.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("image lease \"", lease_id, "\": malformed"));
  }
  EMBER_ASSIGN_OR_RETURN(FileLock lock, FileLock::Exclusive(leases.parent_path() / "locks" / key));
  return RemoveLease(lease);
}

absl::StatusOr<uint64_t> ImageCache::EvictUnused(size_t keep) {
  // Most recently used first: a key's lease directory changes whenever a lease is made or
  // ended there.
  std::vector<std::pair<int64_t, std::string>> keys;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(options_.dir / "images", ec)) {
    std::string name = entry.path().filename().string();
    if (!name.ends_with(".ext4") || !IsHexKey(name.substr(0, name.size() - 5))) continue;
    std::string key = name.substr(0, name.size() - 5);
    struct stat st {};
    if (::stat((options_.dir / "leases" / key).c_str(), &st) != 0 &&
        ::stat(entry.path().c_str(), &st) != 0) {
      continue;  // evicted by another process meanwhile
    }
    keys.emplace_back(int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec, key);
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("list ", (options_.dir / "images").string(), ": ", ec.message()));
  }
  std::sort(keys.rbegin(), keys.rend());
  uint64_t freed = 0;
  size_t kept = 0;
  for (const auto& [used, key] : keys) {
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
    if (kept < keep) {
      ++kept;
      continue;
    }
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
