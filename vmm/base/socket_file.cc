#include "vmm/base/socket_file.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "vmm/base/unique_fd.h"

namespace ember::base {

int ConnectNoFollow(int sock, int dir_fd, const std::string& name) {
  UniqueFd file(::openat(dir_fd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!file) return -1;
  struct stat st {};
  if (::fstat(file.Get(), &st) != 0) return -1;
  if (S_ISLNK(st.st_mode)) {
    errno = ELOOP;
    return -1;
  }
  if (!S_ISSOCK(st.st_mode)) {
    errno = ENOTSOCK;
    return -1;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "/proc/self/fd/%d", file.Get());
  // sockaddr_un is the sockaddr of AF_UNIX: the kernel reads it by family.
  return ::connect(sock, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
}

}  // namespace ember::base
