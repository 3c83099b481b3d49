#include "vmm/runtime/bind_source.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "vmm/base/status.h"
#include "vmm/runtime/bundle.h"
#include "vmm/runtime/sorted_names.h"

namespace ember::runtime {
namespace {

namespace fs = std::filesystem;

constexpr int kReadFlags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;

absl::Status OverBudget(const std::string& name) {
  return absl::InvalidArgumentError(absl::StrCat("the bind-mounted files exceed ", kMaxCopiedBytes,
                                                 " bytes, all a VM is given copies of (at ", name,
                                                 ")"));
}

// Charges `bytes` to `budget`, or fails naming the entry that did not fit.
absl::Status Charge(std::size_t bytes, const std::string& name, std::size_t* budget) {
  if (bytes > *budget) return OverBudget(name);
  *budget -= bytes;
  return absl::OkStatus();
}

// The contents of the regular file open at `fd` (`st`: its fstat). Reads at most st_size + 1
// bytes from that descriptor: a file that grows meanwhile (or a size that lied) is refused, not
// read without end.
absl::StatusOr<std::string> ReadBounded(int fd, const struct stat& st, const std::string& name,
                                        std::size_t* budget) {
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size > *budget) return OverBudget(name);
  std::string contents(size + 1, '\0');
  std::size_t got = 0;
  while (got < contents.size()) {
    ssize_t n = ::read(fd, contents.data() + got, contents.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return base::ErrnoError("read", name);
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  if (got > size) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": grew while it was copied (past the ", size, " bytes it had)"));
  }
  contents.resize(got);
  *budget -= got;
  return contents;
}

// openat2 has no glibc wrapper on every distribution this builds on. RESOLVE_BENEATH: neither
// ".." nor an absolute symlink may leave `root_fd` (EXDEV), which is what lets relative links
// inside keep working; no /proc magic links either.
int OpenBeneath(int root_fd, const std::string& relative, uint64_t flags) {
  open_how how{};
  how.flags = flags;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(::syscall(SYS_openat2, root_fd, relative.c_str(), &how, sizeof(how)));
}

// Walks a directory source through descriptors only: subdirectories are opened from their
// parent's descriptor without following a symlink, files and links from the source's
// descriptor with RESOLVE_BENEATH, so swapping an entry for a link between listing and opening
// cannot lead out.
class TreeReader {
 public:
  TreeReader(int root_fd, std::string source, std::size_t* budget)
      : root_fd_(root_fd), source_(std::move(source)), budget_(budget) {}

  absl::Status Walk(int dir_fd, const std::string& relative) {
    struct stat dir_st {};
    if (::fstat(dir_fd, &dir_st) != 0) return base::ErrnoError("fstat", Shown(relative));
    ancestors_.emplace_back(dir_st.st_dev, dir_st.st_ino);
    absl::Status walked = WalkEntries(dir_fd, relative);
    ancestors_.pop_back();
    return walked;
  }

  std::vector<CopiedFile> Take() { return std::move(files_); }

 private:
  absl::Status WalkEntries(int dir_fd, const std::string& relative) {
    EMBER_ASSIGN_OR_RETURN(std::vector<std::string> names, SortedNames(dir_fd, Shown(relative)));
    for (const std::string& name : names) {
      if (name.starts_with("..")) continue;
      const std::string path = relative.empty() ? name : absl::StrCat(relative, "/", name);
      // Names travel in the Exec request too, and bound how much a tree can make this walk.
      EMBER_RETURN_IF_ERROR(Charge(path.size(), Shown(path), budget_));
      if (path.size() >= PATH_MAX) {
        return absl::InvalidArgumentError(Shown(path) + ": path too long to be opened");
      }
      struct stat st {};
      if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;  // removed since it was listed
        return base::ErrnoError("fstatat", Shown(path));
      }
      if (S_ISDIR(st.st_mode)) {
        base::UniqueFd child(
            ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!child) return base::ErrnoError("open", Shown(path));
        EMBER_RETURN_IF_ERROR(Walk(child.Get(), path));
      } else if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) {
        EMBER_RETURN_IF_ERROR(Copy(dir_fd, name, path, S_ISLNK(st.st_mode)));
      }
    }
    return absl::OkStatus();
  }

  std::string Shown(const std::string& path) const { return absl::StrCat(source_, "/", path); }

  // A regular file, or a symlink, at `path` beneath the source (`name` in `dir_fd`).
  absl::Status Copy(int dir_fd, const std::string& name, const std::string& path, bool link) {
    // A regular file's last component is not followed: one swapped for a link since the
    // fstatat is refused (ELOOP) rather than read through.
    base::UniqueFd fd(OpenBeneath(root_fd_, path, kReadFlags | (link ? 0 : O_NOFOLLOW)));
    if (!fd) {
      if (errno == ENOENT) return absl::OkStatus();  // a link to nothing, or removed meanwhile
      if (errno == EXDEV) return LeadsOut(dir_fd, name, path);
      if (errno == ELOOP) {
        return absl::InvalidArgumentError(
            Shown(path) + ": a symlink loop, or a file replaced by a symlink while it was copied");
      }
      return base::ErrnoError("openat2", Shown(path));
    }
    struct stat st {};
    if (::fstat(fd.Get(), &st) != 0) return base::ErrnoError("fstat", Shown(path));
    if (S_ISDIR(st.st_mode)) {
      // A link to a directory inside: what it holds, under the link's name (kubelet links a
      // key's first component, `sub -> ..data/sub`, for a key `sub/file`), as a container
      // would see it. A link back to a directory being walked would be a tree without end.
      if (std::find(ancestors_.begin(), ancestors_.end(), std::pair{st.st_dev, st.st_ino}) !=
          ancestors_.end()) {
        return absl::OkStatus();
      }
      return Walk(fd.Get(), path);
    }
    if (!S_ISREG(st.st_mode)) return absl::OkStatus();  // a FIFO, a socket, a device
    EMBER_ASSIGN_OR_RETURN(std::string contents, ReadBounded(fd.Get(), st, Shown(path), budget_));
    files_.push_back({path, std::move(contents), static_cast<uint32_t>(st.st_mode & 07777)});
    return absl::OkStatus();
  }

  absl::Status LeadsOut(int dir_fd, const std::string& name, const std::string& path) const {
    char target[PATH_MAX];
    ssize_t n = ::readlinkat(dir_fd, name.c_str(), target, sizeof target);
    std::string shown_target =
        n > 0 ? absl::StrCat(" (", std::string(target, static_cast<std::size_t>(n)), ")") : "";
    return absl::InvalidArgumentError(absl::StrCat(
        Shown(path), ": a symlink that leads out of the mounted directory", shown_target,
        ": only links that stay inside it are followed"));
  }

  const int root_fd_;
  const std::string source_;
  std::size_t* const budget_;
  std::vector<CopiedFile> files_;
  std::vector<std::pair<dev_t, ino_t>> ancestors_;  // the directories being walked, outermost first
};

}  // namespace

absl::StatusOr<BindSource> BindSource::Open(const fs::path& path) {
  // The type first, by stat: a device node is never opened (opening some has effects).
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
    return absl::NotFoundError(absl::StrCat("no file or directory at ", path.string()));
  }
  const bool directory = S_ISDIR(st.st_mode);
  base::UniqueFd fd(::open(path.c_str(), kReadFlags | (directory ? O_DIRECTORY : 0)));
  if (!fd) return base::ErrnoError("open", path.string());
  // What was opened decides, not what was stat'ed a moment before.
  if (::fstat(fd.Get(), &st) != 0) return base::ErrnoError("fstat", path.string());
  if (!(directory ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode))) {
    return absl::NotFoundError(
        absl::StrCat(path.string(), ": changed type while it was opened"));
  }
  return BindSource(path, std::move(fd), directory);
}

absl::StatusOr<CopiedFile> BindSource::ReadFile(std::size_t* budget) const {
  struct stat st {};
  if (::fstat(fd_.Get(), &st) != 0) return base::ErrnoError("fstat", path_.string());
  EMBER_ASSIGN_OR_RETURN(std::string contents,
                         ReadBounded(fd_.Get(), st, path_.string(), budget));
  return CopiedFile{"", std::move(contents), static_cast<uint32_t>(st.st_mode & 07777)};
}

absl::StatusOr<std::vector<CopiedFile>> BindSource::ReadTree(std::size_t* budget) const {
  TreeReader reader(fd_.Get(), path_.string(), budget);
  EMBER_RETURN_IF_ERROR(reader.Walk(fd_.Get(), ""));
  return reader.Take();
}

}  // namespace ember::runtime
