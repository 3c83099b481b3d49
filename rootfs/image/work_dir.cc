#include "rootfs/image/work_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "vmm/base/status.h"

namespace ember::rootfs {

absl::StatusOr<std::vector<std::string>> ListDirectory(int dir_fd, const std::string& display) {
  // fdopendir takes the fd it is given; give it its own.
  int walk_fd = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (walk_fd < 0) return base::ErrnoError("open", display);
  DIR* dir = ::fdopendir(walk_fd);
  if (dir == nullptr) {
    absl::Status status = base::ErrnoError("fdopendir", display);
    ::close(walk_fd);
    return status;
  }
  std::vector<std::string> names;
  for (;;) {
    errno = 0;
    dirent* entry = ::readdir(dir);
    if (entry == nullptr) break;
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  const int err = errno;
  ::closedir(dir);
  if (err != 0) return base::ErrnoError(err, "readdir", display);
  return names;
}

absl::Status RemoveAll(int dir_fd, const std::string& name) {
  if (::unlinkat(dir_fd, name.c_str(), 0) == 0 || errno == ENOENT) return absl::OkStatus();
  if (errno != EISDIR) return base::ErrnoError("unlink", name);
  base::UniqueFd child(
      ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!child) return base::ErrnoError("open", name);
  // The names first, then the removals: readdir's position is not defined across unlinks.
  absl::StatusOr<std::vector<std::string>> names = ListDirectory(child.Get(), name);
  if (!names.ok()) return names.status();
  for (const std::string& child_name : *names) {
    if (absl::Status status = RemoveAll(child.Get(), child_name); !status.ok()) return status;
  }
  if (::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) != 0) return base::ErrnoError("rmdir", name);
  return absl::OkStatus();
}

absl::StatusOr<WorkDir> WorkDir::Create(const std::string& prefix) {
  std::string path = prefix + "XXXXXX";
  if (::mkdtemp(path.data()) == nullptr) return base::ErrnoError("mkdtemp", path);
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) {
    absl::Status status = base::ErrnoError("open", path);
    ::rmdir(path.c_str());
    return status;
  }
  return WorkDir(std::move(path), std::move(fd));
}

WorkDir::~WorkDir() {
  if (path_.empty()) return;
  fd_.Reset();
  // Best effort: a scratch directory left behind is named after the image, for the user to
  // find; the process's outcome is already decided.
  if (absl::Status status = RemoveAll(AT_FDCWD, path_); !status.ok()) {
    std::fprintf(stderr, "ember-rootfs: could not remove %s: %s\n", path_.c_str(),
                 std::string(status.message()).c_str());
  }
}

}  // namespace ember::rootfs
