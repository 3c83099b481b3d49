#include "vmm/emberd/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "vmm/base/status.h"
#include "vmm/base/unix_address.h"

namespace ember::emberd {

absl::StatusOr<base::UniqueFd> ListenUnix(const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(sockaddr_un addr, base::UnixAddress(path));
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return base::ErrnoError("socket", path);
  ::unlink(path.c_str());
  if (::bind(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return base::ErrnoError("bind", path);
  }
  ::chmod(path.c_str(), 0600);
  if (::listen(fd.Get(), 8) != 0) return base::ErrnoError("listen", path);
  return fd;
}

absl::StatusOr<base::UniqueFd> ConnectUnix(const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(sockaddr_un addr, base::UnixAddress(path));
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return base::ErrnoError("socket", path);
  if (::connect(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return base::ErrnoError("connect", path);
  }
  return fd;
}

}  // namespace ember::emberd
