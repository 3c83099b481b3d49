#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "vmm/base/event_fd.h"
#include "vmm/base/unique_fd.h"

namespace ember::base {

// An epoll loop owned by one thread (the VMM thread). Handlers run on that thread and must
// not block. Other threads talk to it only through Post() and Stop().
class EventLoop {
 public:
  // Called with the epoll event mask that became ready.
  using Handler = std::function<void(std::uint32_t events)>;

  [[nodiscard]] static absl::StatusOr<EventLoop> Create();

  // Watches `fd` (borrowed: the caller keeps it open until Remove) for `events`.
  // Owner thread only.
  [[nodiscard]] absl::Status Add(int fd, std::uint32_t events, Handler handler);
  [[nodiscard]] absl::Status Modify(int fd, std::uint32_t events);
  void Remove(int fd);

  // Runs `task` on the loop's thread soon. Any thread.
  void Post(std::function<void()> task);
  // Makes Run() return after the current iteration. Any thread.
  void Stop();

  // Dispatches events until Stop(). Owner thread only.
  [[nodiscard]] absl::Status Run();
  // Dispatches the events ready within `timeout_ms` (-1 waits forever); for tests and for
  // callers that interleave their own work.
  [[nodiscard]] absl::Status RunOnce(int timeout_ms);

  EventLoop(EventLoop&&) noexcept;
  EventLoop& operator=(EventLoop&&) noexcept;
  ~EventLoop();

 private:
  EventLoop(UniqueFd epoll, EventFd wakeup);
  void DrainPosted();

  UniqueFd epoll_;
  EventFd wakeup_;
  // Heap-held so dispatch calls a handler in place rather than copying it (a copy can
  // allocate, once per event). A handler removed while events are being dispatched (it may
  // remove itself) is moved to retired_ and destroyed after the round.
  std::unordered_map<int, std::unique_ptr<Handler>> handlers_;
  std::vector<std::unique_ptr<Handler>> retired_;
  bool dispatching_ = false;
  bool stopping_ = false;

  // Heap-held so the loop stays movable while holding a mutex.
  struct Inbox {
    std::mutex mu;
    std::vector<std::function<void()>> tasks;  // guarded by mu
    bool stop_requested = false;               // guarded by mu
  };
  std::unique_ptr<Inbox> inbox_;
};

}  // namespace ember::base
