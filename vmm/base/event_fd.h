#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::base {

// An owned Linux eventfd, non-blocking and close-on-exec. Used for irqfd, ioeventfd and
// cross-thread wake-ups. Signal() may be called from any thread.
class EventFd {
 public:
  [[nodiscard]] static absl::StatusOr<EventFd> Create(int extra_flags = 0);

  // Adds one to the counter; never blocks (the counter cannot realistically overflow).
  void Signal() const;
  // Reads and clears the counter; returns 0 when it was already clear.
  std::uint64_t Consume() const;

  [[nodiscard]] int Get() const { return fd_.Get(); }

 private:
  explicit EventFd(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace ember::base
