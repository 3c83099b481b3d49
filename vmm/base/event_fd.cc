#include "vmm/base/event_fd.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include "vmm/base/status.h"

namespace ember::base {

absl::StatusOr<EventFd> EventFd::Create(int extra_flags) {
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC | extra_flags);
  if (fd < 0) return ErrnoError("eventfd");
  return EventFd(UniqueFd(fd));
}

void EventFd::Signal() const {
  std::uint64_t one = 1;
  // EAGAIN means the counter is saturated, which still leaves it signalled.
  [[maybe_unused]] ssize_t ignored = ::write(fd_.Get(), &one, sizeof(one));
}

std::uint64_t EventFd::Consume() const {
  std::uint64_t value = 0;
  if (::read(fd_.Get(), &value, sizeof(value)) != sizeof(value)) return 0;
  return value;
}

}  // namespace ember::base
