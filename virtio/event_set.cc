#include "virtio/event_set.h"

#include <cerrno>

#include "vmm/base/logging.h"
#include "vmm/base/status.h"

namespace ember::virtio {

absl::StatusOr<EventSet> EventSet::Create() {
  base::UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll) return base::ErrnoError("epoll_create1", "device event set");
  return EventSet(std::move(epoll));
}

absl::Status EventSet::Add(int fd, std::uint32_t events, std::uint64_t token) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = token;
  if (::epoll_ctl(epoll_.Get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    return base::ErrnoError("epoll_ctl(ADD)", "device event set");
  }
  return absl::OkStatus();
}

absl::Status EventSet::Modify(int fd, std::uint32_t events, std::uint64_t token) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = token;
  if (::epoll_ctl(epoll_.Get(), EPOLL_CTL_MOD, fd, &ev) != 0) {
    return base::ErrnoError("epoll_ctl(MOD)", "device event set");
  }
  return absl::OkStatus();
}

void EventSet::Remove(int fd) {
  if (::epoll_ctl(epoll_.Get(), EPOLL_CTL_DEL, fd, nullptr) != 0 && errno != ENOENT) {
    EMBER_LOG(kWarn) << "device event set: epoll_ctl(DEL) failed: " << base::ErrnoError("epoll_ctl");
  }
}

std::size_t EventSet::Poll(std::span<epoll_event> out) {
  for (;;) {
    const int n = ::epoll_wait(epoll_.Get(), out.data(), static_cast<int>(out.size()), 0);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno != EINTR) return 0;
  }
}

}  // namespace ember::virtio
