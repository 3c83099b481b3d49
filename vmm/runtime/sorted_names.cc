#include "vmm/runtime/sorted_names.h"

#include <dirent.h>
#include <fcntl.h>

#include <algorithm>
#include <cerrno>

#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::runtime {

absl::StatusOr<std::vector<std::string>> SortedNames(int dir_fd, const std::string& shown) {
  // A descriptor of its own: readdir moves the offset, which a dup would share with dir_fd.
  base::UniqueFd own(::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!own) return base::ErrnoError("open", shown);
  DIR* dir = ::fdopendir(own.Get());
  if (dir == nullptr) return base::ErrnoError("fdopendir", shown);
  (void)own.Release();  // closedir closes it
  std::vector<std::string> names;
  errno = 0;
  while (dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  int read_errno = errno;
  ::closedir(dir);
  if (read_errno != 0) return base::ErrnoError(read_errno, "readdir", shown);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace ember::runtime
