#include "tests/fuzz/fuzz_host.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>

#include "vmm/base/unix_address.h"

namespace ember::fuzz {

// The objects are never freed: the exit handlers that remove their files run after static
// destructors would have.
const std::string& FuzzDiskPath() {
  static const std::string* path = [] {
    auto* p = new std::string("/tmp/ember_fuzz_disk_XXXXXX");
    const int fd = ::mkstemp(p->data());
    if (fd < 0 || ::ftruncate(fd, 64 * 1024) != 0) std::abort();
    ::close(fd);
    std::atexit([] { ::unlink(FuzzDiskPath().c_str()); });
    return p;
  }();
  return *path;
}

const VsockHost& FuzzVsockHost() {
  static const std::string* dir = [] {
    char d[] = "/tmp/ember_fuzz_vsock_XXXXXX";
    if (::mkdtemp(d) == nullptr) std::abort();
    return new std::string(d);
  }();
  static const VsockHost* host = [] {
    auto* h = new VsockHost{*dir + "/v.sock", {}};
    h->service = base::UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    const sockaddr_un addr = base::UnixAddress(h->uds_path + "_1024").value();
    // sockaddr_un is what bind takes for a Unix socket.
    if (::bind(h->service.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(h->service.Get(), 64) != 0) {
      std::abort();
    }
    std::atexit([] { std::filesystem::remove_all(*dir); });
    return h;
  }();
  return *host;
}

}  // namespace ember::fuzz
