#include "rootfs/agent/exec_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::agent {
namespace {

bool SafePath(const std::string& path) {
  if (path.size() < 2 || path.front() != '/' || path.back() == '/') return false;
  std::size_t start = 1;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    const std::string part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

absl::Status MakeParents(const std::string& path) {
  for (std::size_t slash = path.find('/', 1); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    const std::string dir = path.substr(0, slash);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return base::ErrnoError("mkdir", dir);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteExecFiles(const v1::ExecRequest& request) {
  const int count = request.file_paths_size();
  if (request.file_contents_size() != count || request.file_modes_size() != count) {
    return absl::InvalidArgumentError(
        "exec: file_paths, file_contents and file_modes must be as long as each other");
  }
  for (int i = 0; i < count; ++i) {
    const std::string& path = request.file_paths(i);
    if (!SafePath(path)) {
      return absl::InvalidArgumentError("exec: file_paths: \"" + path +
                                        "\" is not an absolute path without \"..\"");
    }
    EMBER_RETURN_IF_ERROR(MakeParents(path));
    const mode_t mode = static_cast<mode_t>(request.file_modes(i) & 07777);
    // Replaced, not written through: whatever was there (a symlink included) is not followed.
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return base::ErrnoError("unlink", path);
    base::UniqueFd fd(
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
    if (!fd) return base::ErrnoError("create", path);
    const std::string& data = request.file_contents(i);
    std::size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::write(fd.Get(), data.data() + done, data.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return base::ErrnoError("write", path);
      done += static_cast<std::size_t>(n);
    }
    if (::fchmod(fd.Get(), mode) != 0) return base::ErrnoError("chmod", path);
  }
  return absl::OkStatus();
}

}  // namespace ember::agent
