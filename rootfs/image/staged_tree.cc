#include "rootfs/image/staged_tree.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <utility>

#include "rootfs/image/work_dir.h"
#include "vmm/base/status.h"

namespace ember::rootfs {
namespace {

std::string Show(const std::string& path) { return "/" + path; }

std::string Join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

}  // namespace

absl::StatusOr<std::string> NormalizePath(const std::string& name) {
  if (name.find('\n') != std::string::npos) {
    return absl::InvalidArgumentError("entry name with a newline: \"" + name + "\"");
  }
  std::string path;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    std::string component = name.substr(start, end - start);
    start = end + 1;
    if (component.empty() || component == ".") continue;
    if (component == "..") {
      return absl::InvalidArgumentError("entry " + name + " escapes the root (\"..\")");
    }
    path = Join(path, component);
  }
  return path;
}

uint32_t StagedPermissions(uint32_t mode) {
  uint32_t permissions = mode & 0777;
  return S_ISDIR(mode) ? permissions | 0700 : permissions | 0600;
}

StagedTree::StagedTree(std::string path, base::UniqueFd root)
    : path_(std::move(path)),
      root_(std::move(root)),
      staged_uid_(::geteuid()),
      staged_gid_(::getegid()) {
  entries_[""] = EntryMeta{0, 0, S_IFDIR | 0755, ::time(nullptr), {}};
}

absl::Status StagedBytes::Charge(uint64_t bytes, const std::string& path) {
  if (limit_ && (bytes > *limit_ || used_ > *limit_ - bytes)) {
    return absl::InvalidArgumentError("the image's files expand to more than --max-bytes " +
                                      std::to_string(*limit_) + " bytes (at " + Show(path) + ")");
  }
  used_ += bytes;
  return absl::OkStatus();
}

absl::StatusOr<StagedTree> StagedTree::Create(int parent_fd, const std::string& parent_path,
                                              const std::string& name, StagedBytes* budget) {
  std::string path = parent_path + "/" + name;
  if (::mkdirat(parent_fd, name.c_str(), 0700) != 0) return base::ErrnoError("mkdir", path);
  base::UniqueFd root(
      ::openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root) return base::ErrnoError("open", path);
  StagedTree tree(std::move(path), std::move(root));
  tree.budget_ = budget;
  // The root's staged mode, so its fix is computed like every other directory's.
  if (::fchmod(tree.root_.Get(), StagedPermissions(S_IFDIR | 0755)) != 0) {
    return base::ErrnoError("fchmod", tree.path_);
  }
  return tree;
}

absl::StatusOr<base::UniqueFd> StagedTree::OpenParent(const std::string& path, bool create,
                                                      std::string* name) {
  size_t slash = path.rfind('/');
  *name = slash == std::string::npos ? path : path.substr(slash + 1);
  base::UniqueFd dir(::dup(root_.Get()));
  if (!dir) return base::ErrnoError("dup", path_);
  if (slash == std::string::npos) return dir;
  std::string walked;
  size_t start = 0;
  while (start < slash) {
    size_t end = path.find('/', start);
    std::string component = path.substr(start, end - start);
    walked = Join(walked, component);
    start = end + 1;
    int child =
        ::openat(dir.Get(), component.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (child < 0 && errno == ENOENT && create) {
      if (::mkdirat(dir.Get(), component.c_str(), StagedPermissions(S_IFDIR | 0755)) != 0) {
        return base::ErrnoError("mkdir", Show(walked));
      }
      Record(walked, EntryMeta{0, 0, S_IFDIR | 0755, ::time(nullptr), {}});
      child =
          ::openat(dir.Get(), component.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (child < 0) {
      const int err = errno;
      if (err == ENOENT) return absl::NotFoundError(Show(walked) + " does not exist");
      // O_DIRECTORY|O_NOFOLLOW fails on a symlink with ENOTDIR (or ELOOP): tell them apart.
      struct stat st {};
      if ((err == ENOTDIR || err == ELOOP) &&
          ::fstatat(dir.Get(), component.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          S_ISLNK(st.st_mode)) {
        return absl::InvalidArgumentError("entry " + Show(path) + " goes through the symlink " +
                                          Show(walked) + " (a way to write outside the root)");
      }
      if (err == ENOTDIR || err == ELOOP) {
        return absl::InvalidArgumentError("entry " + Show(path) + " goes through " + Show(walked) +
                                          ", which is not a directory");
      }
      return base::ErrnoError(err, "open", Show(walked));
    }
    dir.Reset(child);
  }
  return dir;
}

void StagedTree::Forget(const std::string& path) {
  if (path.empty()) {
    EntryMeta root = entries_[""];
    entries_.clear();
    entries_[""] = root;
    return;
  }
  entries_.erase(path);
  // Everything below `path`: the keys from "path/" up to (not including) "path0".
  entries_.erase(entries_.lower_bound(path + "/"), entries_.lower_bound(path + "0"));
}

void StagedTree::Record(const std::string& path, const EntryMeta& meta) {
  entries_[path] = meta;
  this_layer_.insert(path);
}

absl::StatusOr<bool> StagedTree::Replace(int parent_fd, const std::string& name,
                                         const std::string& path, uint32_t type) {
  struct stat st {};
  if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return false;
    return base::ErrnoError("stat", Show(path));
  }
  if (S_ISDIR(st.st_mode) && type == S_IFDIR) return true;
  EMBER_RETURN_IF_ERROR(RemoveAll(parent_fd, name));
  Forget(path);
  return false;
}

absl::Status StagedTree::AddDirectory(const std::string& path, const EntryMeta& meta) {
  if (path.empty()) {
    if (::fchmod(root_.Get(), StagedPermissions(meta.mode)) != 0) {
      return base::ErrnoError("fchmod", path_);
    }
    Record(path, meta);
    return absl::OkStatus();
  }
  std::string name;
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd parent, OpenParent(path, true, &name));
  EMBER_ASSIGN_OR_RETURN(bool exists, Replace(parent.Get(), name, path, S_IFDIR));
  if (!exists && ::mkdirat(parent.Get(), name.c_str(), StagedPermissions(meta.mode)) != 0) {
    return base::ErrnoError("mkdir", Show(path));
  }
  if (exists && ::fchmodat(parent.Get(), name.c_str(), StagedPermissions(meta.mode), 0) != 0) {
    return base::ErrnoError("chmod", Show(path));
  }
  Record(path, meta);
  return absl::OkStatus();
}

absl::StatusOr<base::UniqueFd> StagedTree::AddFile(const std::string& path, const EntryMeta& meta) {
  if (path.empty()) return absl::InvalidArgumentError("a file entry names the root");
  std::string name;
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd parent, OpenParent(path, true, &name));
  EMBER_ASSIGN_OR_RETURN(bool exists, Replace(parent.Get(), name, path, S_IFREG));
  (void)exists;
  base::UniqueFd file(::openat(parent.Get(), name.c_str(),
                               O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                               StagedPermissions(meta.mode)));
  if (!file) return base::ErrnoError("create", Show(path));
  // The umask may have taken bits away.
  if (::fchmod(file.Get(), StagedPermissions(meta.mode)) != 0) {
    return base::ErrnoError("fchmod", Show(path));
  }
  Record(path, meta);
  return file;
}

absl::Status StagedTree::AddSymlink(const std::string& path, const std::string& target,
                                    const EntryMeta& meta) {
  if (path.empty()) return absl::InvalidArgumentError("a symlink entry names the root");
  std::string name;
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd parent, OpenParent(path, true, &name));
  EMBER_ASSIGN_OR_RETURN(bool exists, Replace(parent.Get(), name, path, S_IFLNK));
  (void)exists;
  // Any target is fine here: the symlink is only ever read inside the guest, and nothing
  // later is written through it (OpenParent).
  if (::symlinkat(target.c_str(), parent.Get(), name.c_str()) != 0) {
    return base::ErrnoError("symlink", Show(path));
  }
  Record(path, meta);
  return absl::OkStatus();
}

absl::Status StagedTree::AddFifo(const std::string& path, const EntryMeta& meta) {
  if (path.empty()) return absl::InvalidArgumentError("a fifo entry names the root");
  std::string name;
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd parent, OpenParent(path, true, &name));
  EMBER_ASSIGN_OR_RETURN(bool exists, Replace(parent.Get(), name, path, S_IFIFO));
  (void)exists;
  if (::mkfifoat(parent.Get(), name.c_str(), StagedPermissions(meta.mode)) != 0) {
    return base::ErrnoError("mkfifo", Show(path));
  }
  Record(path, meta);
  return absl::OkStatus();
}

absl::Status StagedTree::AddHardLink(const std::string& path, const std::string& target) {
  if (path.empty() || target.empty()) {
    return absl::InvalidArgumentError("a hard link entry names the root");
  }
  std::string target_name;
  absl::StatusOr<base::UniqueFd> target_parent = OpenParent(target, false, &target_name);
  if (!target_parent.ok()) {
    if (absl::IsNotFound(target_parent.status())) {
      return absl::InvalidArgumentError("hard link " + Show(path) + " to " + Show(target) +
                                        ", which the archive does not hold");
    }
    return target_parent.status();
  }
  struct stat st {};
  if (::fstatat(target_parent->Get(), target_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return absl::InvalidArgumentError("hard link " + Show(path) + " to " + Show(target) +
                                      ", which the archive does not hold");
  }
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError("hard link " + Show(path) + " to the directory " +
                                      Show(target));
  }
  if (path == target) return absl::OkStatus();
  std::string name;
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd parent, OpenParent(path, true, &name));
  EMBER_ASSIGN_OR_RETURN(bool exists, Replace(parent.Get(), name, path, S_IFREG));
  (void)exists;
  // Flags 0: a link to a symlink links the symlink itself, never what it points to.
  if (::linkat(target_parent->Get(), target_name.c_str(), parent.Get(), name.c_str(), 0) != 0) {
    return base::ErrnoError("link", Show(path));
  }
  auto it = entries_.find(target);
  Record(path, it != entries_.end() ? it->second : EntryMeta{0, 0, st.st_mode, st.st_mtime, {}});
  return absl::OkStatus();
}

absl::Status StagedTree::Whiteout(const std::string& path) {
  if (path.empty() || this_layer_.count(path) != 0) return absl::OkStatus();
  std::string name;
  absl::StatusOr<base::UniqueFd> parent = OpenParent(path, false, &name);
  if (absl::IsNotFound(parent.status())) return absl::OkStatus();  // nothing to remove
  if (!parent.ok()) return parent.status();
  EMBER_RETURN_IF_ERROR(RemoveAll(parent->Get(), name));
  Forget(path);
  return absl::OkStatus();
}

absl::Status StagedTree::MakeOpaque(const std::string& dir) {
  base::UniqueFd dir_fd;
  if (dir.empty()) {
    dir_fd.Reset(::dup(root_.Get()));
    if (!dir_fd) return base::ErrnoError("dup", path_);
  } else {
    std::string name;
    EMBER_ASSIGN_OR_RETURN(base::UniqueFd parent, OpenParent(dir, true, &name));
    dir_fd.Reset(
        ::openat(parent.Get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir_fd) {
      if (errno == ENOENT) return absl::OkStatus();  // nothing below it to hide
      if (errno == ELOOP || errno == ENOTDIR) {
        return absl::InvalidArgumentError("opaque whiteout in " + Show(dir) +
                                          ", which is not a directory");
      }
      return base::ErrnoError("open", Show(dir));
    }
  }
  EMBER_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDirectory(dir_fd.Get(), Show(dir)));
  std::erase_if(names,
                [&](const std::string& name) { return this_layer_.count(Join(dir, name)) != 0; });
  for (const std::string& name : names) {
    EMBER_RETURN_IF_ERROR(RemoveAll(dir_fd.Get(), name));
    Forget(Join(dir, name));
  }
  return absl::OkStatus();
}

absl::Status StagedTree::SetTimes() {
  // Reverse order puts "a/b" before "a": a directory's time is set after its contents change.
  for (auto it = entries_.rbegin(); it != entries_.rend(); ++it) {
    const timespec times[2] = {{it->second.mtime, 0}, {it->second.mtime, 0}};
    const char* relative = it->first.empty() ? "." : it->first.c_str();
    if (::utimensat(root_.Get(), relative, times, AT_SYMLINK_NOFOLLOW) != 0) {
      return base::ErrnoError("utimensat", Show(it->first));
    }
  }
  return absl::OkStatus();
}

std::vector<InodeFix> StagedTree::InodeFixes() const {
  std::vector<InodeFix> fixes;
  for (const auto& [path, meta] : entries_) {
    InodeFix fix;
    fix.path = path;
    fix.uid = meta.uid;
    fix.gid = meta.gid;
    fix.set_owner = meta.uid != staged_uid_ || meta.gid != staged_gid_;
    fix.mode = meta.mode;
    fix.set_mode = !S_ISLNK(meta.mode) && (meta.mode & 07777) != StagedPermissions(meta.mode);
    fix.xattrs = meta.xattrs;
    if (fix.set_owner || fix.set_mode || !fix.xattrs.empty()) fixes.push_back(std::move(fix));
  }
  return fixes;
}

}  // namespace ember::rootfs
