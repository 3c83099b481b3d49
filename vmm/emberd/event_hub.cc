#include "vmm/emberd/event_hub.h"

#include <algorithm>

namespace ember::emberd {

std::shared_ptr<EventHub::Watcher> EventHub::Subscribe(const std::string& vm_id) {
  auto watcher = std::make_shared<Watcher>();
  watcher->vm_id = vm_id;
  std::lock_guard lock(mu_);
  watchers_.push_back(watcher);
  return watcher;
}

void EventHub::Unsubscribe(const std::shared_ptr<Watcher>& watcher) {
  std::lock_guard lock(mu_);
  std::erase(watchers_, watcher);
}

void EventHub::Publish(const v1::Event& event) {
  std::lock_guard lock(mu_);
  for (auto& watcher : watchers_) {
    if (!watcher->vm_id.empty() && watcher->vm_id != event.vm_id()) continue;
    std::lock_guard wlock(watcher->mu);
    if (watcher->queue.size() >= kMaxQueuedEvents) {
      watcher->overflowed = true;
    } else {
      watcher->queue.push_back(event);
    }
    watcher->cv.notify_all();
  }
}

std::size_t EventHub::watchers() const {
  std::lock_guard lock(mu_);
  return watchers_.size();
}

}  // namespace ember::emberd
