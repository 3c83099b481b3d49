#pragma once

// What the host-side device harnesses (net_bench, vsock_bench) share: the real MmioTransport
// wired into a real base::EventLoop as ember-vmm's VMM thread wires it, Linux's EVENT_IDX kick
// test on the driver side, and status checks that end the harness. No guest CPU is involved:
// the "guest" is the irqfd handler on the loop thread.
#include <sys/epoll.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "perf/bench_report.h"
#include "virtio/mmio/mmio_transport.h"
#include "virtio/testing/fake_driver_queue.h"
#include "vmm/base/event_loop.h"

namespace ember::perf {

// `what` and errno's text, for Die.
[[nodiscard]] inline std::string ErrnoText(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

template <typename T>
T CheckOk(const std::string& harness, absl::StatusOr<T> value, const std::string& what) {
  if (!value.ok()) Die(harness, what + ": " + value.status().ToString());
  return std::move(value).value();
}

inline void CheckOk(const std::string& harness, const absl::Status& status,
                    const std::string& what) {
  if (!status.ok()) Die(harness, what + ": " + status.ToString());
}

// Wires `transport` into `loop` as VirtioDevices::Add wires a device into ember-vmm's loop
// (every queue's ioeventfd, every device EventSource), plus `on_interrupt` on the irqfd, which
// stands in for the guest's interrupt handler. `events` counts dispatches, for stall checks.
// Borrows everything; the transport and `events` outlive the loop's use of them.
inline void WireTransport(const std::string& harness, base::EventLoop& loop,
                          virtio::MmioTransport& transport, std::function<void()> on_interrupt,
                          std::uint64_t& events) {
  virtio::MmioTransport* t = &transport;
  std::uint64_t* count = &events;
  for (std::size_t q = 0; q < t->num_queues(); ++q) {
    CheckOk(harness,
            loop.Add(t->queue_event(q).Get(), EPOLLIN,
                     [t, q, count](std::uint32_t) {
                       ++*count;
                       t->HandleQueueEvent(q);
                     }),
            "watch ioeventfd");
  }
  for (virtio::EventSource& source : t->device().EventSources()) {
    CheckOk(harness,
            loop.Add(source.fd, EPOLLIN | (source.edge_triggered ? EPOLLET : 0u),
                     [on_readable = std::move(source.on_readable), count](std::uint32_t) {
                       ++*count;
                       on_readable();
                     }),
            "watch device fd");
  }
  CheckOk(harness,
          loop.Add(t->irqfd().Get(), EPOLLIN,
                   [on_interrupt = std::move(on_interrupt), count](std::uint32_t) {
                     ++*count;
                     on_interrupt();
                   }),
          "watch irqfd");
}

// The driver's side of EVENT_IDX notification suppression (Linux's virtqueue_kick_prepare:
// vring_need_event(avail_event, new, old)): call after publishing; true when the device asked
// to be notified of the buffers published since the previous call.
class KickPolicy {
 public:
  [[nodiscard]] bool NeedsKick(const virtio::testing::FakeDriverQueue& queue) {
    const std::uint16_t now = queue.AvailIdx();
    const std::uint16_t event = queue.AvailEvent();
    const bool kick =
        static_cast<std::uint16_t>(now - event - 1) < static_cast<std::uint16_t>(now - prepared_);
    prepared_ = now;
    return kick;
  }

 private:
  std::uint16_t prepared_ = 0;
};

// A fixed set of guest buffers, one per descriptor of a queue of `count`, that one-descriptor
// chains are made of and found again by head: the harnesses' guests recycle them for the whole
// sample (the fake drivers' own helpers allocate afresh for every chain).
class GuestBufferPool {
 public:
  GuestBufferPool(std::string harness, virtio::testing::FakeGuestAllocator& alloc,
                  std::uint16_t count, std::uint32_t bytes)
      : harness_(std::move(harness)), bytes_(bytes), slot_of_head_(count, -1) {
    for (int i = 0; i < count; ++i) {
      addrs_.push_back(alloc.Alloc(bytes, 64));
      free_.push_back(i);
    }
  }
  [[nodiscard]] bool empty() const { return free_.empty(); }
  [[nodiscard]] std::size_t in_use() const { return addrs_.size() - free_.size(); }
  [[nodiscard]] std::uint32_t bytes() const { return bytes_; }
  [[nodiscard]] const std::vector<base::GuestAddress>& addrs() const { return addrs_; }
  // Posts a free buffer (there must be one) as a chain of `len` bytes; returns its address.
  base::GuestAddress Post(virtio::testing::FakeDriverQueue& queue, std::uint32_t len,
                          bool device_writable) {
    const int slot = free_.back();
    free_.pop_back();
    const base::GuestAddress addr = addrs_[static_cast<std::size_t>(slot)];
    const virtio::testing::FakeBuffer buffer{addr, len, device_writable};
    slot_of_head_[queue.AddChain(std::span(&buffer, 1))] = slot;
    return addr;
  }
  // The buffer of used head `head` back to the free list; returns its address. A head that is
  // not posted (a device returning one twice) ends the harness.
  base::GuestAddress Release(std::uint32_t head) {
    if (head >= slot_of_head_.size() || slot_of_head_[head] < 0) {
      Die(harness_, "the device returned head " + std::to_string(head) + ", which is not posted");
    }
    const int slot = slot_of_head_[head];
    slot_of_head_[head] = -1;
    free_.push_back(slot);
    return addrs_[static_cast<std::size_t>(slot)];
  }

 private:
  std::string harness_;
  std::uint32_t bytes_;
  std::vector<base::GuestAddress> addrs_;
  std::vector<int> free_;
  std::vector<int> slot_of_head_;  // -1: not posted
};

// One figure against its baseline: each variant once untimed (first-use costs stay out), then
// `runs` samples of each in turn, the order swapping every run so that neither always follows
// the other, printed as medians. `scale` turns a sample into the figure's unit.
inline void MeasureAgainstBaseline(const std::string& name, const std::string& baseline_name,
                                   const std::string& unit, double scale,
                                   const std::function<double()>& measured,
                                   const std::function<double()>& baseline, int runs,
                                   bool verbose) {
  (void)measured();
  (void)baseline();
  std::vector<double> measured_samples;
  std::vector<double> baseline_samples;
  for (int run = 0; run < runs; ++run) {
    for (int k = 0; k < 2; ++k) {
      const bool is_measured = (k + run) % 2 == 0;
      const double value = (is_measured ? measured() : baseline()) * scale;
      (is_measured ? measured_samples : baseline_samples).push_back(value);
      if (verbose) {
        std::fprintf(stderr, "run %d: %s: %.2f %s\n", run,
                     (is_measured ? name : baseline_name).c_str(), value, unit.c_str());
      }
    }
  }
  PrintFigure(name, Median(measured_samples), unit, baseline_name, Median(baseline_samples));
}

// Runs `loop` until `done()`; ends the harness when nothing was dispatched for 5 s.
inline void RunUntil(const std::string& harness, base::EventLoop& loop, const std::uint64_t& events,
                     const std::function<bool()>& done, const std::string& what) {
  constexpr auto kStall = std::chrono::seconds(5);
  auto last_event = std::chrono::steady_clock::now();
  std::uint64_t seen = events;
  while (!done()) {
    CheckOk(harness, loop.RunOnce(100), "event loop");
    if (events != seen) {
      seen = events;
      last_event = std::chrono::steady_clock::now();
    } else if (std::chrono::steady_clock::now() - last_event > kStall) {
      Die(harness, "nothing happened for 5 s: " + what);
    }
  }
}

}  // namespace ember::perf
