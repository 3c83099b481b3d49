#include "vmm/emberd/clone_network/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "vmm/base/logging.h"
#include "vmm/base/status.h"

namespace ember::emberd {
namespace {

// /proc/thread-self, not /proc/self: a setns moves one thread, and the main thread's
// namespace (what /proc/self shows) may be another.
constexpr char kThreadNetns[] = "/proc/thread-self/ns/net";

absl::Status MakeParentDirs(const std::string& path) {
  for (std::size_t pos = path.find('/', 1); pos != std::string::npos;
       pos = path.find('/', pos + 1)) {
    const std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return base::ErrnoError("mkdir", prefix);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<base::UniqueFd> CurrentNetns() {
  base::UniqueFd fd(::open(kThreadNetns, O_RDONLY | O_CLOEXEC));
  if (!fd) return base::ErrnoError("open", kThreadNetns);
  return fd;
}

absl::StatusOr<ScopedNetns> ScopedNetns::Enter(int netns_fd) {
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd original, CurrentNetns());
  if (::setns(netns_fd, CLONE_NEWNET) != 0) {
    return base::ErrnoError("setns(CLONE_NEWNET)", "fd " + std::to_string(netns_fd));
  }
  return ScopedNetns(std::move(original));
}

ScopedNetns::~ScopedNetns() {
  if (!original_) return;
  if (::setns(original_.Get(), CLONE_NEWNET) != 0) {
    EMBER_LOG(kError) << "setns back to the thread's own network namespace: "
                      << std::strerror(errno);
    std::abort();
  }
}

absl::StatusOr<base::UniqueFd> NewNetns() {
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd original, CurrentNetns());
  if (::unshare(CLONE_NEWNET) != 0) return base::ErrnoError("unshare(CLONE_NEWNET)");
  // From here the thread is in the new namespace: it must go back whatever happens.
  ScopedNetns back{std::move(original)};
  return CurrentNetns();
}

absl::Status NameNetns(int netns_fd, const std::string& path) {
  EMBER_RETURN_IF_ERROR(MakeParentDirs(path));
  base::UniqueFd file(
      ::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444));
  if (!file) return base::ErrnoError("create", path);
  file.Reset();
  const std::string source = "/proc/self/fd/" + std::to_string(netns_fd);
  if (::mount(source.c_str(), path.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    absl::Status error = base::ErrnoError("bind mount network namespace", path);
    ::unlink(path.c_str());
    return error;
  }
  return absl::OkStatus();
}

absl::Status UnnameNetns(const std::string& path) {
  if (::umount2(path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0 && errno != ENOENT &&
      errno != EINVAL) {
    return base::ErrnoError("umount", path);
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return base::ErrnoError("unlink", path);
  return absl::OkStatus();
}

}  // namespace ember::emberd
