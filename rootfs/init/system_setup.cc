#include "rootfs/init/system_setup.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "rootfs/init/unique_fd.h"

namespace ember::init {
namespace {

struct MountSpec {
  const char* target;
  const char* type;
  unsigned long flags;
  const char* data;
};

// In order: /dev/pts and /dev/shm need /dev.
constexpr MountSpec kMounts[] = {
    {"/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
    {"/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
    {"/dev", "devtmpfs", MS_NOSUID, "mode=0755"},
    {"/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"},
    {"/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
    {"/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"},
    {"/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
};

std::string Errno(const std::string& call, const std::string& object, int error) {
  return absl::StrCat(call, " ", object, ": ", std::strerror(error));
}

absl::Status ErrnoStatus(const std::string& call, const std::string& object) {
  int error = errno;
  return absl::Status(absl::ErrnoToStatusCode(error), Errno(call, object, error));
}

// statx's STATX_ATTR_MOUNT_ROOT (Linux 5.8) says whether `path` is the root of a mount.
bool IsMountPoint(const char* path) {
  struct statx info {};
  if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, 0, &info) != 0) return false;
  return (info.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) != 0 &&
         (info.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
}

absl::StatusOr<UniqueFd> InetSocket() {
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus("socket", "AF_INET");
  return fd;
}

absl::Status SetUp(int fd, const std::string& device) {
  ifreq request{};
  device.copy(request.ifr_name, IFNAMSIZ - 1);
  if (ioctl(fd, SIOCGIFFLAGS, &request) != 0) return ErrnoStatus("SIOCGIFFLAGS", device);
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
  if (ioctl(fd, SIOCSIFFLAGS, &request) != 0) return ErrnoStatus("SIOCSIFFLAGS", device);
  return absl::OkStatus();
}

void PutAddress(sockaddr& into, in_addr address) {
  sockaddr_in inet{};
  inet.sin_family = AF_INET;
  inet.sin_addr = address;
  static_assert(sizeof(inet) <= sizeof(into));
  std::memcpy(&into, &inet, sizeof(inet));
}

}  // namespace

std::vector<std::string> MountFilesystems() {
  std::vector<std::string> errors;
  for (const MountSpec& spec : kMounts) {
    if (mkdir(spec.target, 0755) != 0 && errno != EEXIST) {
      errors.push_back(Errno("mkdir", spec.target, errno));
      continue;
    }
    if (IsMountPoint(spec.target)) continue;
    if (mount(spec.type, spec.target, spec.type, spec.flags, spec.data) != 0) {
      errors.push_back(Errno(absl::StrCat("mount ", spec.type, " on"), spec.target, errno));
    }
  }
  return errors;
}

absl::Status SetHostname(const std::string& hostname) {
  if (sethostname(hostname.data(), hostname.size()) != 0) {
    return ErrnoStatus("sethostname", hostname);
  }
  return absl::OkStatus();
}

absl::Status BringUpLoopback() {
  absl::StatusOr<UniqueFd> fd = InetSocket();
  if (!fd.ok()) return fd.status();
  return SetUp(fd->get(), "lo");
}

absl::Status ConfigureInterface(const NetSettings& net) {
  absl::StatusOr<UniqueFd> fd = InetSocket();
  if (!fd.ok()) return fd.status();
  ifreq request{};
  net.device.copy(request.ifr_name, IFNAMSIZ - 1);
  PutAddress(request.ifr_addr, net.address);
  if (ioctl(fd->get(), SIOCSIFADDR, &request) != 0) return ErrnoStatus("SIOCSIFADDR", net.device);
  in_addr mask{};
  mask.s_addr = net.prefix_length == 0 ? 0 : htonl(~std::uint32_t{0} << (32 - net.prefix_length));
  PutAddress(request.ifr_netmask, mask);
  if (ioctl(fd->get(), SIOCSIFNETMASK, &request) != 0) {
    return ErrnoStatus("SIOCSIFNETMASK", net.device);
  }
  if (absl::Status status = SetUp(fd->get(), net.device); !status.ok()) return status;
  if (!net.gateway) return absl::OkStatus();
  rtentry route{};
  in_addr any{};
  PutAddress(route.rt_dst, any);
  PutAddress(route.rt_genmask, any);
  PutAddress(route.rt_gateway, *net.gateway);
  route.rt_flags = RTF_UP | RTF_GATEWAY;
  std::string device = net.device;  // rt_dev is a char*, not const
  route.rt_dev = device.data();
  if (ioctl(fd->get(), SIOCADDRT, &route) != 0 && errno != EEXIST) {
    return ErrnoStatus("SIOCADDRT default via gateway on", net.device);
  }
  return absl::OkStatus();
}

absl::Status AddEntropy(std::span<const std::uint8_t> seed) {
  UniqueFd fd(open("/dev/urandom", O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("open", "/dev/urandom");
  // rand_pool_info ends in a flexible array: the bytes follow the two counts.
  std::vector<std::uint8_t> buffer(sizeof(rand_pool_info) + seed.size());
  rand_pool_info header{};
  header.entropy_count = static_cast<int>(seed.size() * 8);
  header.buf_size = static_cast<int>(seed.size());
  std::memcpy(buffer.data(), &header, sizeof(header));
  std::memcpy(buffer.data() + sizeof(header), seed.data(), seed.size());
  if (ioctl(fd.get(), RNDADDENTROPY, buffer.data()) != 0) {
    return ErrnoStatus("RNDADDENTROPY", "/dev/urandom");
  }
  return absl::OkStatus();
}

}  // namespace ember::init
