#include "vmm/base/drive_file.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "vmm/base/status.h"

namespace ember::base {

absl::StatusOr<UniqueFd> OpenDriveFile(const std::string& path, bool read_only, bool direct_io,
                                       const std::string& what) {
  const int flags =
      O_CLOEXEC | (read_only ? O_RDONLY : O_RDWR) | (direct_io ? O_DIRECT : 0);
  UniqueFd file(::open(path.c_str(), flags | O_NONBLOCK));
  if (!file) {
    return absl::InvalidArgumentError(ErrnoError("open", what + " (" + path + ")").message());
  }
  struct stat info {};
  if (::fstat(file.Get(), &info) != 0) return ErrnoError("fstat", what + " (" + path + ")");
  if (!S_ISREG(info.st_mode) && !S_ISBLK(info.st_mode)) {
    return absl::InvalidArgumentError(what + ": " + path +
                                      " is neither a regular file nor a block device");
  }
  // Non-blocking was for the open only: io_uring would answer EAGAIN instead of waiting on a
  // file marked O_NONBLOCK.
  if (::fcntl(file.Get(), F_SETFL, flags & ~O_CLOEXEC & ~O_ACCMODE) != 0) {
    return ErrnoError("fcntl(F_SETFL)", what + " (" + path + ")");
  }
  return file;
}

}  // namespace ember::base
