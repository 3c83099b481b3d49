#include "virtio/net/tap.h"

#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "vmm/base/status.h"

namespace ember::virtio::net {
namespace {

static_assert(kTunOffloadCsum == TUN_F_CSUM && kTunOffloadTso4 == TUN_F_TSO4 &&
              kTunOffloadTso6 == TUN_F_TSO6 && kTunOffloadUfo == TUN_F_UFO);

// The driver behind interface `name` ("tun" for tun and tap devices), asked in the caller's
// network namespace (unlike /sys/class/net, which shows the namespace sysfs was mounted in).
// Empty when the interface does not exist.
std::string DriverOf(const std::string& name) {
  base::UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return {};
  ethtool_drvinfo info{};
  info.cmd = ETHTOOL_GDRVINFO;
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  // SIOCETHTOOL takes its argument through ifr_data.
  ifr.ifr_data = reinterpret_cast<char*>(&info);
  if (::ioctl(sock.Get(), SIOCETHTOOL, &ifr) != 0) {
    // An interface without ethtool support still exists.
    return ::if_nametoindex(name.c_str()) != 0 ? "unknown" : "";
  }
  return std::string(info.driver, strnlen(info.driver, sizeof(info.driver)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<LinuxTap>> LinuxTap::Open(const std::string& name, Mode mode) {
  if (name.empty() || name.size() >= IFNAMSIZ || name.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("tap name \"", name,
                                                   "\" is not a valid interface name (1 to ",
                                                   IFNAMSIZ - 1, " characters, no '/')"));
  }
  const std::string driver = DriverOf(name);
  const bool exists = !driver.empty();
  if (mode == Mode::kExisting && !exists) {
    return absl::NotFoundError(absl::StrCat("tap device ", name,
                                            " does not exist (create it with `ip tuntap add ",
                                            name, " mode tap`)"));
  }
  if (exists && driver != "tun") {
    return absl::InvalidArgumentError(
        absl::StrCat("network interface ", name, " exists but is not a tap device"));
  }
  base::UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!fd) return base::ErrnoError("open", absl::StrCat("/dev/net/tun (for tap ", name, ")"));

  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_flags = static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
  if (::ioctl(fd.Get(), TUNSETIFF, &ifr) != 0) {
    const int err = errno;
    switch (err) {
      case EBUSY:
        return absl::FailedPreconditionError(absl::StrCat(
            "tap device ", name, " is busy: another process (another VM?) has it attached"));
      case EPERM:
        return absl::PermissionDeniedError(
            absl::StrCat("no permission to ", exists ? "attach to" : "create", " tap device ",
                         name, " (needs CAP_NET_ADMIN or a tap owned by this user)"));
      case EINVAL:
        return absl::InvalidArgumentError(absl::StrCat(
            "cannot attach to ", name, " as a tap with virtio-net headers (is it a tun device?)"));
      default:
        return base::ErrnoError(err, "TUNSETIFF", absl::StrCat("tap ", name));
    }
  }
  auto tap = std::unique_ptr<LinuxTap>(new LinuxTap(std::move(fd), name));
  if (mode == Mode::kCreate && !exists) {
    absl::Status up = tap->BringUp();
    if (!up.ok()) return up;
  }
  return tap;
}

absl::Status LinuxTap::SetOffloads(unsigned tun_flags) {
  if (::ioctl(fd_.Get(), TUNSETOFFLOAD, static_cast<unsigned long>(tun_flags)) != 0) {
    return base::ErrnoError("TUNSETOFFLOAD", absl::StrCat("tap ", name_));
  }
  return absl::OkStatus();
}

absl::Status LinuxTap::SetVnetHeaderSize(int bytes) {
  if (::ioctl(fd_.Get(), TUNSETVNETHDRSZ, &bytes) != 0) {
    return base::ErrnoError("TUNSETVNETHDRSZ", absl::StrCat("tap ", name_));
  }
  return absl::OkStatus();
}

absl::Status LinuxTap::BringUp() {
  base::UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return base::ErrnoError("socket", "for SIOCSIFFLAGS");
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name_.data(), name_.size());
  if (::ioctl(sock.Get(), SIOCGIFFLAGS, &ifr) != 0) {
    return base::ErrnoError("SIOCGIFFLAGS", absl::StrCat("tap ", name_));
  }
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (::ioctl(sock.Get(), SIOCSIFFLAGS, &ifr) != 0) {
    return base::ErrnoError("SIOCSIFFLAGS", absl::StrCat("tap ", name_));
  }
  return absl::OkStatus();
}

}  // namespace ember::virtio::net
