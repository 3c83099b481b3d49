#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::virtio::net {

// TUN_F_* offload flags (<linux/if_tun.h>), typed for -Wconversion; the tests check them.
inline constexpr unsigned kTunOffloadCsum = 0x01;
inline constexpr unsigned kTunOffloadTso4 = 0x02;
inline constexpr unsigned kTunOffloadTso6 = 0x04;
inline constexpr unsigned kTunOffloadUfo = 0x10;

// The host end of a guest NIC as the net device uses it: a non-blocking fd where one read()
// returns one frame and one write() sends one, each preceded by a virtio-net header of the
// size set by SetVnetHeaderSize. A real tap in production; tests substitute a datagram
// socketpair (virtio/testing/fake_tap.h). Owned by the NetDevice; loop thread and the
// activating vCPU thread (under the device's lock).
class Tap {
 public:
  virtual ~Tap() = default;
  [[nodiscard]] virtual int fd() const = 0;
  [[nodiscard]] virtual const std::string& name() const = 0;
  // TUNSETOFFLOAD: the offloads (kTunOffload*) the guest can take on frames it receives.
  [[nodiscard]] virtual absl::Status SetOffloads(unsigned tun_flags) = 0;
  // TUNSETVNETHDRSZ: 12 with VIRTIO_F_VERSION_1 (struct virtio_net_hdr_v1).
  [[nodiscard]] virtual absl::Status SetVnetHeaderSize(int bytes) = 0;
};

// A Linux tap opened through /dev/net/tun with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR.
class LinuxTap final : public Tap {
 public:
  enum class Mode {
    kExisting,  // the device must already exist (Firecracker's behaviour)
    kCreate,    // create it when missing and bring it up (needs CAP_NET_ADMIN)
  };

  // Attaches to tap `name`. Errors say which: a name too long for an interface, a missing
  // device (kExisting), a device that is not a tap, a tap another process holds (EBUSY),
  // no permission.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<LinuxTap>> Open(const std::string& name,
                                                                       Mode mode);

  [[nodiscard]] int fd() const override { return fd_.Get(); }
  [[nodiscard]] const std::string& name() const override { return name_; }
  [[nodiscard]] absl::Status SetOffloads(unsigned tun_flags) override;
  [[nodiscard]] absl::Status SetVnetHeaderSize(int bytes) override;
  // Sets IFF_UP on the interface (needs CAP_NET_ADMIN).
  [[nodiscard]] absl::Status BringUp();

 private:
  LinuxTap(base::UniqueFd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}
  base::UniqueFd fd_;
  std::string name_;
};

}  // namespace ember::virtio::net
