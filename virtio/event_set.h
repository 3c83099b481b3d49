#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::virtio {

// A device-private epoll set: the device adds, re-arms and removes its own fds (tap, sockets,
// timers) at run time, and the VMM loop watches only fd() as one EventSource. The VMM loop
// wakes while any fd in the set is ready for what the device asked, and the device pauses an
// fd (interest 0) to stop it waking the loop, e.g. while the guest has no RX buffers.
// This is how Firecracker nests its vsock backend's epoll into the VMM's.
//
// Thread-safe (epoll_ctl is): Add/Modify/Remove may be called from the vCPU thread that
// activates the device as well as from the loop thread; Poll runs on the loop thread.
class EventSet {
 public:
  [[nodiscard]] static absl::StatusOr<EventSet> Create();

  // Watches `fd` (borrowed; the caller removes it before closing) for `events`
  // (EPOLLIN/EPOLLOUT, or 0 to keep it registered but silent). `token` comes back from Poll.
  [[nodiscard]] absl::Status Add(int fd, std::uint32_t events, std::uint64_t token);
  [[nodiscard]] absl::Status Modify(int fd, std::uint32_t events, std::uint64_t token);
  void Remove(int fd);

  // The events ready now, without waiting; returns how many of `out` were filled.
  [[nodiscard]] std::size_t Poll(std::span<epoll_event> out);

  // Readable while an fd in the set is ready; owned by the set.
  [[nodiscard]] int fd() const { return epoll_.Get(); }

 private:
  explicit EventSet(base::UniqueFd epoll) : epoll_(std::move(epoll)) {}
  base::UniqueFd epoll_;
};

}  // namespace ember::virtio
