#include "vmm/agent_client/socket_file.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "vmm/base/status.h"

namespace ember::agent_client {

absl::StatusOr<base::UniqueFd> OpenSocketFile(int dir_fd, const std::string& name,
                                              std::optional<uid_t> owner) {
  base::UniqueFd fd(::openat(dir_fd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return base::ErrnoError("open", "the VMM's vsock socket " + name);
  struct stat st {};
  if (::fstat(fd.Get(), &st) != 0) return base::ErrnoError("fstat", name);
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError("the VMM's vsock socket " + name + " is not a socket");
  }
  if (owner.has_value() && st.st_uid != *owner) {
    return absl::FailedPreconditionError("the VMM's vsock socket " + name + " belongs to uid " +
                                         std::to_string(st.st_uid) + ", not the VMM's " +
                                         std::to_string(*owner));
  }
  return fd;
}

std::string SocketFdPath(const base::UniqueFd& socket) {
  return "/proc/self/fd/" + std::to_string(socket.Get());
}

}  // namespace ember::agent_client
