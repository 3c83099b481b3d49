#include "rootfs/image/ext4_image.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "rootfs/image/interrupt.h"
#include "rootfs/image/tool_process.h"
#include "vmm/base/atomic_file.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::rootfs {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint64_t kBlock = 4096;
constexpr uint64_t kInodeSize = 256;

uint64_t RoundUpTo(uint64_t value, uint64_t unit) { return (value + unit - 1) / unit * unit; }

// The journal mke2fs 1.47 makes for a file system of `blocks` 4 KiB blocks
// (ext2fs_default_journal_size).
uint64_t JournalBytes(uint64_t blocks) {
  if (blocks < 32768) return 4 * kMiB;
  if (blocks < 256 * 1024) return 16 * kMiB;
  if (blocks < 512 * 1024) return 32 * kMiB;
  if (blocks < 4096 * 1024) return 64 * kMiB;
  if (blocks < 8192 * 1024) return 128 * kMiB;
  if (blocks < 16384 * 1024) return 256 * kMiB;
  if (blocks < 32768 * 1024) return 512 * kMiB;
  return 1024 * kMiB;
}

// What lies at `path` inside the tree, resolved as debugfs resolves it in the image: symlinks
// followed with the tree as root. The last component is not followed when `follow` is false.
enum class Found { kNothing, kDirectory, kOther };
absl::StatusOr<Found> LookUp(int tree_fd, const std::string& path, bool follow) {
  open_how how{};
  how.flags = O_PATH | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW);
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(::syscall(SYS_openat2, tree_fd, path.c_str(), &how, sizeof(how)));
  if (fd < 0) {
    if (errno == ENOENT) return Found::kNothing;
    if (errno == ENOTDIR) {
      return absl::InvalidArgumentError("the tree's /" + path + " lies under a non-directory");
    }
    return base::ErrnoError("openat2", "/" + path);
  }
  base::UniqueFd owner(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return base::ErrnoError("fstat", "/" + path);
  return S_ISDIR(st.st_mode) ? Found::kDirectory : Found::kOther;
}

// The debugfs commands that put `file` into the image: its missing parent directories made,
// a file of the tree already at its place removed, the file written, owned by root.
absl::Status AddGuestFileCommands(int tree_fd, const GuestFile& file,
                                  std::set<std::string>* made_dirs, std::string* script) {
  // Every parent is named with a trailing "/." so debugfs follows it if it is a symlink
  // (its lookups follow every component but the last).
  std::string parent;
  size_t start = 0;
  for (;;) {
    size_t slash = file.image_path.find('/', start);
    if (slash == std::string::npos) break;
    std::string component = file.image_path.substr(start, slash - start);
    std::string dir = parent.empty() ? component : parent + "/" + component;
    if (made_dirs->count(dir) != 0) {  // made by an earlier file's commands
      parent = dir;
      start = slash + 1;
      continue;
    }
    EMBER_ASSIGN_OR_RETURN(Found found, LookUp(tree_fd, dir, /*follow=*/true));
    if (found == Found::kOther) {
      return absl::InvalidArgumentError("the tree's /" + dir + " is not a directory; /" +
                                        file.image_path + " cannot be added");
    }
    if (found == Found::kNothing) {
      EMBER_ASSIGN_OR_RETURN(Found link, LookUp(tree_fd, dir, /*follow=*/false));
      if (link != Found::kNothing) {
        return absl::InvalidArgumentError("the tree's /" + dir + " is a symlink to nothing; /" +
                                          file.image_path + " cannot be added");
      }
      *script +=
          "mkdir " + DebugfsQuote("/" + (parent.empty() ? "" : parent + "/./") + component) + "\n";
      made_dirs->insert(dir);
    }
    parent = dir;
    start = slash + 1;
  }
  std::string name = file.image_path.substr(start);
  std::string in_image = "/" + (parent.empty() ? "" : parent + "/./") + name;
  EMBER_ASSIGN_OR_RETURN(Found existing, LookUp(tree_fd, file.image_path, /*follow=*/false));
  if (existing == Found::kDirectory) {
    return absl::InvalidArgumentError("the tree has a directory at /" + file.image_path);
  }
  if (existing == Found::kOther) *script += "rm " + DebugfsQuote(in_image) + "\n";
  *script += "cd " + DebugfsQuote("/" + parent + (parent.empty() ? "" : "/.")) + "\n";
  *script += "write " + DebugfsQuote(file.host_path) + " " + DebugfsQuote(name) + "\n";
  *script += "cd /\n";
  char mode[32];
  std::snprintf(mode, sizeof(mode), "0%o", S_IFREG | (file.permissions & 07777));
  *script += "set_inode_field " + DebugfsQuote(in_image) + " mode " + mode + "\n";
  *script += "set_inode_field " + DebugfsQuote(in_image) + " uid 0\n";
  *script += "set_inode_field " + DebugfsQuote(in_image) + " gid 0\n";
  return absl::OkStatus();
}

// The debugfs commands that make `point` an empty root-owned directory, unless the tree has
// anything at its path (a directory, a symlink, even a file: the tree's own is kept).
absl::Status AddMountPointCommands(int tree_fd, const MountPoint& point, std::string* script) {
  EMBER_ASSIGN_OR_RETURN(Found existing, LookUp(tree_fd, point.image_path, /*follow=*/false));
  if (existing != Found::kNothing) return absl::OkStatus();
  std::string path = DebugfsQuote("/" + point.image_path);
  char mode[32];
  std::snprintf(mode, sizeof(mode), "0%o", S_IFDIR | (point.permissions & 07777));
  *script += "mkdir " + path + "\n";
  *script += "set_inode_field " + path + " mode " + mode + "\n";
  *script += "set_inode_field " + path + " uid 0\n";
  *script += "set_inode_field " + path + " gid 0\n";
  return absl::OkStatus();
}

// `value_files` names the files holding xattr values for debugfs (ea_set -f): made here, for
// the caller to remove.
absl::Status AddFixCommands(const InodeFix& fix, const std::string& value_prefix,
                            std::vector<std::string>* value_files, std::string* script) {
  std::string path = DebugfsQuote("/" + fix.path);
  if (fix.set_owner) {
    *script += "set_inode_field " + path + " uid " + std::to_string(fix.uid) + "\n";
    *script += "set_inode_field " + path + " gid " + std::to_string(fix.gid) + "\n";
  }
  if (fix.set_mode) {
    char mode[32];
    std::snprintf(mode, sizeof(mode), "0%o", fix.mode);
    *script += "set_inode_field " + path + " mode " + mode + "\n";
  }
  for (const auto& [name, value] : fix.xattrs) {
    // A value may hold any byte, so it goes through a file rather than the command line.
    std::string file = value_prefix + std::to_string(value_files->size());
    value_files->push_back(file);
    EMBER_RETURN_IF_ERROR(
        base::WriteFileAtomically(file, value, 0600, base::AtomicFile::Durability::kRenameOnly));
    *script += "ea_set -f " + DebugfsQuote(file) + " " + path + " " + DebugfsQuote(name) + "\n";
  }
  return absl::OkStatus();
}

// debugfs exits 0 whatever its commands did; each failed command leaves a line on stderr. Its
// banner ("debugfs 1.47.0 (5-Feb-2023)") is the only line a good run leaves. The first error,
// and how many followed it.
std::string DebugfsErrors(const std::string& stderr_text) {
  std::string first;
  int more = 0;
  size_t start = 0;
  while (start < stderr_text.size()) {
    size_t end = stderr_text.find('\n', start);
    if (end == std::string::npos) end = stderr_text.size();
    std::string line = stderr_text.substr(start, end - start);
    start = end + 1;
    if (line.empty() || line.rfind("debugfs ", 0) == 0) continue;
    if (first.empty()) {
      first = line;
    } else {
      ++more;
    }
  }
  if (more > 0) first += " (and " + std::to_string(more) + " more)";
  return first;
}

absl::StatusOr<uint64_t> FileSize(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return base::ErrnoError("stat", path);
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace

std::string DebugfsQuote(const std::string& path) {
  std::string quoted = "\"";
  for (char c : path) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

uint64_t AutomaticInodeCount(const TreeStats& stats) {
  return RoundUpTo(stats.entries + stats.entries / 2 + 1024, 1024);
}

uint64_t AutomaticImageSize(const TreeStats& stats, uint64_t extra_bytes) {
  uint64_t content = stats.data_bytes + RoundUpTo(extra_bytes, kBlock);
  uint64_t headroom = std::max(content / 4, 64 * kMiB);
  uint64_t inode_tables = AutomaticInodeCount(stats) * kInodeSize;
  // Bitmaps, group descriptors, the blocks reserved for resizing: under 2% at any size.
  uint64_t size = content + headroom + inode_tables;
  size += size / 50 + 4 * kMiB;
  size += JournalBytes(size / kBlock);
  return RoundUpTo(size, kMiB);
}

absl::Status BuildImage(const ImagePlan& plan, int tree_fd, const std::string& output) {
  uint64_t extra = 0;
  for (const GuestFile& file : plan.guest_files) {
    EMBER_ASSIGN_OR_RETURN(uint64_t size, FileSize(file.host_path));
    extra += size + kBlock;
  }
  uint64_t size = plan.size_bytes ? *plan.size_bytes : AutomaticImageSize(plan.stats, extra);

  EMBER_ASSIGN_OR_RETURN(base::AtomicFile image, base::AtomicFile::Create(output, 0644));
  if (::ftruncate(image.fd(), static_cast<off_t>(size)) != 0) {
    return base::ErrnoError("ftruncate", image.temp_path());
  }
  std::vector<std::string> mke2fs = {"mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096",
                                     // No blocks reserved for root: the image is one guest's
                                     // root disk, its headroom is all the guest's.
                                     "-m", "0"};
  // mke2fs's own inode count for a --size image (mke2fs.conf: one per 4 KiB below 512 MiB,
  // the "small" type, one per 16 KiB above) unless the tree needs more: an image of many small
  // files would otherwise run out of inodes.
  const uint64_t inodes = AutomaticInodeCount(plan.stats);
  const uint64_t bytes_per_inode = size < 512 * kMiB ? 4096 : 16384;
  if (!plan.size_bytes || size / bytes_per_inode < inodes) {
    mke2fs.insert(mke2fs.end(), {"-N", std::to_string(inodes)});
  }
  mke2fs.insert(mke2fs.end(), {"-d", plan.tree, image.temp_path()});
  EMBER_ASSIGN_OR_RETURN(ToolResult made, RunTool(mke2fs));
  EMBER_RETURN_IF_ERROR(CheckInterrupt());  // a Ctrl-C reaches mke2fs too
  if (made.exit_code != 0) {
    std::string why = FirstLine(made.stderr_text);
    if (plan.size_bytes) {
      return absl::InvalidArgumentError("mke2fs -d failed for an image of --size " +
                                        std::to_string(size) + " bytes: " + why);
    }
    return absl::FailedPreconditionError("mke2fs -d " + plan.tree + " failed (exit " +
                                         std::to_string(made.exit_code) + "): " + why);
  }

  std::string script;
  std::vector<std::string> value_files;
  struct RemoveFiles {
    std::vector<std::string>* files;
    ~RemoveFiles() {
      for (const std::string& file : *files) ::unlink(file.c_str());
    }
  } remove_value_files{&value_files};
  for (const InodeFix& fix : plan.fixes) {
    EMBER_RETURN_IF_ERROR(
        AddFixCommands(fix, image.temp_path() + ".xattr-", &value_files, &script));
  }
  std::set<std::string> made_dirs;
  for (const GuestFile& file : plan.guest_files) {
    EMBER_RETURN_IF_ERROR(AddGuestFileCommands(tree_fd, file, &made_dirs, &script));
  }
  for (const MountPoint& point : plan.mount_points) {
    EMBER_RETURN_IF_ERROR(AddMountPointCommands(tree_fd, point, &script));
  }
  if (!script.empty()) {
    std::string script_path = image.temp_path() + ".debugfs";
    EMBER_RETURN_IF_ERROR(base::WriteFileAtomically(script_path, script, 0600,
                                                    base::AtomicFile::Durability::kRenameOnly));
    absl::StatusOr<ToolResult> fixed =
        RunTool({"debugfs", "-w", "-f", script_path, image.temp_path()});
    ::unlink(script_path.c_str());
    if (!fixed.ok()) return fixed.status();
    EMBER_RETURN_IF_ERROR(CheckInterrupt());
    std::string errors = DebugfsErrors(fixed->stderr_text);
    if (fixed->exit_code != 0 || !errors.empty()) {
      return absl::InvalidArgumentError("debugfs could not finish the image: " +
                                        (errors.empty() ? FirstLine(fixed->stderr_text) : errors));
    }
  }
  return image.Commit();
}

}  // namespace ember::rootfs
