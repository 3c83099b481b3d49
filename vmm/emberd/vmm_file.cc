#include "vmm/emberd/vmm_file.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "vmm/base/status.h"

namespace ember::emberd {

absl::StatusOr<base::UniqueFd> OpenVmmFile(const std::string& dir, const std::string& name,
                                           bool in_root) {
  base::UniqueFd root(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) {
    if (errno == ENOENT) return absl::NotFoundError(dir + ": no such directory");
    return base::ErrnoError("open", dir);
  }
  open_how how{};
  how.flags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
  how.resolve = (in_root ? RESOLVE_IN_ROOT : RESOLVE_BENEATH) | RESOLVE_NO_SYMLINKS |
                RESOLVE_NO_MAGICLINKS;
  // openat2 has no glibc wrapper on every distribution this builds on.
  base::UniqueFd fd(
      static_cast<int>(::syscall(SYS_openat2, root.Get(), name.c_str(), &how, sizeof(how))));
  if (!fd) {
    if (errno == ENOENT) return absl::NotFoundError(dir + "/" + name + ": not there (yet)");
    if (errno == ELOOP || errno == EXDEV) {
      return absl::FailedPreconditionError(
          name + ": the VMM's " + name + " is a symlink or leads out of " + dir +
          "; emberd reads only a regular file of the VMM's own");
    }
    return base::ErrnoError("openat2", dir + "/" + name);
  }
  struct stat st {};
  if (::fstat(fd.Get(), &st) != 0) return base::ErrnoError("fstat", dir + "/" + name);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(name + ": the VMM's " + name +
                                         " is not a regular file; emberd reads only those");
  }
  return fd;
}

absl::StatusOr<std::string> ReadAtMost(int fd, std::size_t limit) {
  std::string out(limit, '\0');
  std::size_t got = 0;
  while (got < limit) {
    ssize_t n = ::pread(fd, out.data() + got, limit - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return base::ErrnoError("pread", "a VMM's file");
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  out.resize(got);
  return out;
}

}  // namespace ember::emberd
