#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ember/v1/api.pb.h"

namespace ember::emberd {

// Fans VM events out to WatchEvents streams. Any thread.
class EventHub {
 public:
  struct Watcher {
    std::string vm_id;  // empty: every VM
    std::mutex mu;
    std::condition_variable cv;
    std::deque<v1::Event> queue;  // guarded by mu
    bool overflowed = false;      // guarded by mu: the client fell too far behind
  };
  static constexpr std::size_t kMaxQueuedEvents = 10000;

  [[nodiscard]] std::shared_ptr<Watcher> Subscribe(const std::string& vm_id);
  void Unsubscribe(const std::shared_ptr<Watcher>& watcher);
  void Publish(const v1::Event& event);
  [[nodiscard]] std::size_t watchers() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Watcher>> watchers_;  // guarded by mu_
};

}  // namespace ember::emberd
