#include "tap_device.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <thread>

#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::runtime {
namespace {

// Runs `body` inside the network namespace at `netns_path`, then returns to this one.
absl::Status InNetns(const std::string& netns_path, const std::function<absl::Status()>& body) {
  base::UniqueFd own(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!own) return base::ErrnoError("open", "/proc/self/ns/net");
  base::UniqueFd target(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!target) return base::ErrnoError("open", "network namespace " + netns_path);
  if (::setns(target.Get(), CLONE_NEWNET) != 0) return base::ErrnoError("setns", netns_path);
  absl::Status status = body();
  if (::setns(own.Get(), CLONE_NEWNET) != 0) {
    // Staying in the container's namespace would put every later socket there.
    std::abort();
  }
  return status;
}

// How long DeleteTap waits for a dying VMM to let go of the tap.
constexpr std::chrono::seconds kTapReleaseWait{5};

// Attaches to tap `name`; on failure `*error` (when given) is TUNSETIFF's errno.
absl::StatusOr<base::UniqueFd> OpenTap(const std::string& name, ifreq* ifr, int* error = nullptr) {
  base::UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!fd) return base::ErrnoError("open", "/dev/net/tun");
  *ifr = ifreq{};
  std::strncpy(ifr->ifr_name, name.c_str(), IFNAMSIZ - 1);
  // The flags ember-vmm attaches with (virtio/net/tap.cc).
  ifr->ifr_flags = static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
  if (::ioctl(fd.Get(), TUNSETIFF, ifr) != 0) {
    if (error != nullptr) *error = errno;
    return base::ErrnoError("TUNSETIFF", "tap " + name);
  }
  return fd;
}

// Sets IFF_UP on the interface `ifr` names.
absl::Status BringUp(ifreq& ifr) {
  base::UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return base::ErrnoError("socket", "for SIOCSIFFLAGS");
  if (::ioctl(sock.Get(), SIOCGIFFLAGS, &ifr) != 0) {
    return base::ErrnoError("SIOCGIFFLAGS", std::string("tap ") + ifr.ifr_name);
  }
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (::ioctl(sock.Get(), SIOCSIFFLAGS, &ifr) != 0) {
    return base::ErrnoError("SIOCSIFFLAGS", std::string("tap ") + ifr.ifr_name);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CreateTap(const std::string& netns_path, const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ) {
    return absl::InvalidArgumentError("tap name \"" + name + "\" is not a valid interface name");
  }
  return InNetns(netns_path, [&]() -> absl::Status {
    ifreq ifr;
    absl::StatusOr<base::UniqueFd> tap = OpenTap(name, &ifr);
    if (!tap.ok()) return tap.status();
    if (::ioctl(tap->Get(), TUNSETPERSIST, 1) != 0) {
      return base::ErrnoError("TUNSETPERSIST", "tap " + name);
    }
    absl::Status up = BringUp(ifr);
    // A persistent tap outlives this fd: one that could not be set up goes now, or nobody
    // would remove it (the caller takes a failed CreateTap for no tap at all).
    if (!up.ok()) (void)::ioctl(tap->Get(), TUNSETPERSIST, 0);
    return up;
  });
}

absl::Status DeleteTap(const std::string& netns_path, const std::string& name) {
  if (::access(netns_path.c_str(), F_OK) != 0) return absl::OkStatus();  // it went with it
  return InNetns(netns_path, [&]() -> absl::Status {
    // A supervisor killed outright leaves its VMM to die of PDEATHSIG a moment later; until it
    // has, the tap is still attached (EBUSY) and must be waited for, not taken for gone.
    const auto deadline = std::chrono::steady_clock::now() + kTapReleaseWait;
    for (;;) {
      ifreq ifr;
      int error = 0;
      absl::StatusOr<base::UniqueFd> tap = OpenTap(name, &ifr, &error);
      if (tap.ok()) {
        if (::ioctl(tap->Get(), TUNSETPERSIST, 0) != 0) {
          return base::ErrnoError("TUNSETPERSIST 0", "tap " + name);
        }
        return absl::OkStatus();  // the last fd's close removes it
      }
      if (error != EBUSY) return absl::OkStatus();  // gone already
      if (std::chrono::steady_clock::now() >= deadline) {
        return absl::FailedPreconditionError("tap " + name + " is still attached to a VMM");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
}

}  // namespace ember::runtime
