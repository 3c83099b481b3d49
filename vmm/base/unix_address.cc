#include "vmm/base/unix_address.h"

#include <sys/socket.h>

#include <cstring>

namespace ember::base {

absl::StatusOr<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError("unix socket path \"" + path + "\" is empty or too long");
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  return address;
}

}  // namespace ember::base
