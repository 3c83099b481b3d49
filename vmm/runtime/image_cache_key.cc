#include "vmm/runtime/image_cache_key.h"

#include <fcntl.h>
#include <nettle/sha2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <optional>
#include <system_error>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"
#include "vmm/runtime/sorted_names.h"

namespace ember::runtime {
namespace {

namespace fs = std::filesystem;

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

// Which entries of a tree have their identity (device, inode, change time) in the key. Sizes
// and times are the tree's owner's to set (a tar header does it), so they cannot tell two files
// of the same metadata apart; an inode can, and its change time is set by the kernel on every
// write, chmod, chown, xattr or utimes, never by a user.
enum class Identity {
  // An overlay's upper directory: only files with contents. The directories a snapshotter
  // makes there for mount points are new in each container, and would end sharing of overlay
  // roots; what a directory holds is its entries, which are in the key themselves.
  kFiles,
  // A plain tree: every entry and the root (xattrs, ACLs included, which change the change
  // time), except empty files: runtimes make them as mount points and their contents are known.
  kAll,
};

void AppendIdentity(std::string& record, const struct stat& st) {
  absl::StrAppend(&record, " ", st.st_dev, " ", st.st_ino, " ", st.st_ctim.tv_sec, ".",
                  st.st_ctim.tv_nsec);
}

absl::Status AddEntry(KeyHash& hash, const std::string& relative, const struct stat& st, int dir_fd,
                      const char* name, Identity identity) {
  std::string record = absl::StrCat(relative, " ", st.st_mode, " ", st.st_uid, " ", st.st_gid);
  const bool empty_file = S_ISREG(st.st_mode) && st.st_size == 0;
  if (S_ISREG(st.st_mode)) {
    absl::StrAppend(&record, " ", st.st_size);
    // An empty file's contents are known whatever its time: runtimes make them as mount points.
    if (!empty_file) absl::StrAppend(&record, " ", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec);
  } else if (S_ISLNK(st.st_mode)) {
    std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
    ssize_t n = ::readlinkat(dir_fd, name, target.data(), target.size());
    if (n < 0) return base::ErrnoError("readlinkat", relative);
    target.resize(static_cast<size_t>(n));
    absl::StrAppend(&record, " -> ", target);
  } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
    absl::StrAppend(&record, " ", st.st_rdev);  // overlayfs whiteouts are 0:0 devices
  }
  // A directory's own modification time changes with its entries, which are here themselves.
  if (!empty_file && (S_ISREG(st.st_mode) || identity == Identity::kAll)) {
    AppendIdentity(record, st);
  }
  hash.Add(record);
  return absl::OkStatus();
}

// Every entry below the directory open at `dir_fd`, in name order, without following
// symlinks or reading files.
absl::Status FingerprintTree(KeyHash& hash, int dir_fd, const std::string& relative,
                             Identity identity) {
  EMBER_ASSIGN_OR_RETURN(std::vector<std::string> names, SortedNames(dir_fd, relative));
  for (const std::string& name : names) {
    std::string path = absl::StrCat(relative, "/", name);
    struct stat st {};
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return base::ErrnoError("fstatat", path);
    }
    EMBER_RETURN_IF_ERROR(AddEntry(hash, path, st, dir_fd, name.c_str(), identity));
    if (S_ISDIR(st.st_mode)) {
      base::UniqueFd child(
          ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!child) return base::ErrnoError("open", path);
      EMBER_RETURN_IF_ERROR(FingerprintTree(hash, child.Get(), path, identity));
    }
  }
  return absl::OkStatus();
}

absl::Status FingerprintDirectory(KeyHash& hash, const fs::path& dir, Identity identity) {
  base::UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return base::ErrnoError("open", dir.string());
  if (identity == Identity::kAll) {
    struct stat st {};
    if (::fstat(fd.Get(), &st) != 0) return base::ErrnoError("fstat", dir.string());
    std::string record = "/";
    AppendIdentity(record, st);
    hash.Add(record);
  }
  return FingerprintTree(hash, fd.Get(), "", identity);
}

// A file's identity without reading it: for the guest programs and overlay layers.
absl::Status AddIdentity(KeyHash& hash, const fs::path& path, bool with_inode) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return base::ErrnoError("stat", path.string());
  std::string record =
      absl::StrCat(path.string(), " ", st.st_size, " ", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec);
  if (with_inode) AppendIdentity(record, st);
  hash.Add(record);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> RootfsContentKey(const fs::path& root_dir,
                                             const std::vector<fs::path>& programs) {
  std::error_code ec;
  fs::path root = fs::canonical(root_dir, ec);
  if (ec || !fs::is_directory(root, ec)) {
    return absl::NotFoundError(absl::StrCat("rootfs: no directory at ", root_dir.string()));
  }
  KeyHash hash;
  hash.Add("ember image key v2");
  for (const fs::path& program : programs) {
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
    if (!overlay->upper.empty()) {
      EMBER_RETURN_IF_ERROR(FingerprintDirectory(hash, overlay->upper, Identity::kFiles));
    }
  } else {
    hash.Add("tree");
    EMBER_RETURN_IF_ERROR(FingerprintDirectory(hash, root, Identity::kAll));
  }
  return hash.Hex();
}

}  // namespace ember::runtime
