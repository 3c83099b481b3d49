#include "vmm/base/event_loop.h"

#include <sys/epoll.h>

#include <array>
#include <cerrno>

#include "vmm/base/status.h"

namespace ember::base {

absl::StatusOr<EventLoop> EventLoop::Create() {
  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll) return ErrnoError("epoll_create1");
  EMBER_ASSIGN_OR_RETURN(EventFd wakeup, EventFd::Create());
  EventLoop loop(std::move(epoll), std::move(wakeup));
  int wake_fd = loop.wakeup_.Get();
  EMBER_RETURN_IF_ERROR(loop.Add(wake_fd, EPOLLIN, [](std::uint32_t) {}));
  return loop;
}

EventLoop::EventLoop(UniqueFd epoll, EventFd wakeup)
    : epoll_(std::move(epoll)), wakeup_(std::move(wakeup)), inbox_(std::make_unique<Inbox>()) {}
EventLoop::EventLoop(EventLoop&&) noexcept = default;
EventLoop& EventLoop::operator=(EventLoop&&) noexcept = default;
EventLoop::~EventLoop() = default;

absl::Status EventLoop::Add(int fd, std::uint32_t events, Handler handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_.Get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    return ErrnoError("epoll_ctl(ADD)", "fd " + std::to_string(fd));
  }
  handlers_[fd] = std::make_unique<Handler>(std::move(handler));
  return absl::OkStatus();
}

absl::Status EventLoop::Modify(int fd, std::uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_.Get(), EPOLL_CTL_MOD, fd, &ev) != 0) {
    return ErrnoError("epoll_ctl(MOD)", "fd " + std::to_string(fd));
  }
  return absl::OkStatus();
}

void EventLoop::Remove(int fd) {
  ::epoll_ctl(epoll_.Get(), EPOLL_CTL_DEL, fd, nullptr);
  auto it = handlers_.find(fd);
  if (it == handlers_.end()) return;
  if (dispatching_) retired_.push_back(std::move(it->second));
  handlers_.erase(it);
}

void EventLoop::Post(std::function<void()> task) {
  {
    std::lock_guard lock(inbox_->mu);
    inbox_->tasks.push_back(std::move(task));
  }
  wakeup_.Signal();
}

void EventLoop::Stop() {
  {
    std::lock_guard lock(inbox_->mu);
    inbox_->stop_requested = true;
  }
  wakeup_.Signal();
}

void EventLoop::DrainPosted() {
  wakeup_.Consume();
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard lock(inbox_->mu);
    tasks.swap(inbox_->tasks);
    if (inbox_->stop_requested) stopping_ = true;
  }
  for (auto& task : tasks) task();
}

absl::Status EventLoop::RunOnce(int timeout_ms) {
  std::array<epoll_event, 32> events{};
  int n = ::epoll_wait(epoll_.Get(), events.data(), static_cast<int>(events.size()), timeout_ms);
  if (n < 0) {
    if (errno == EINTR) return absl::OkStatus();
    return ErrnoError("epoll_wait");
  }
  for (int i = 0; i < n; ++i) {
    int fd = events[static_cast<std::size_t>(i)].data.fd;
    if (fd == wakeup_.Get()) {
      DrainPosted();
      continue;
    }
    // A handler may remove other fds; look each one up afresh.
    auto it = handlers_.find(fd);
    if (it != handlers_.end()) {
      dispatching_ = true;
      (*it->second)(events[static_cast<std::size_t>(i)].events);
      dispatching_ = false;
    }
  }
  retired_.clear();
  return absl::OkStatus();
}

absl::Status EventLoop::Run() {
  DrainPosted();  // a Stop() may have come before Run()
  while (!stopping_) EMBER_RETURN_IF_ERROR(RunOnce(-1));
  return absl::OkStatus();
}

}  // namespace ember::base
