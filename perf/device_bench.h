#pragma once

// What the host-side device harnesses (blk_bench, net_bench, vsock_bench) share: the real MmioTransport
// wired into a real base::EventLoop as ember-vmm's VMM thread wires it, Linux's EVENT_IDX kick
// test on the driver side, the timing that keeps the fake guest's work out of the device's
// figure, and status checks that end the harness. No guest CPU is involved: the "guest" is the
// irqfd handler on the loop thread.
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

// One device sample's result: what it moved per second, by two clocks.
struct DeviceRate {
  double per_second = 0;       // per second of the VMM thread's time: the sample's less the guest's
  double wall_per_second = 0;  // per second of the sample, the fake guest's work included
  double guest_share = 0;      // of the sample's time, spent in the fake guest's work
};

// A device sample's clock: the wall-clock time since Start and, within it, the time the fake
// guest spent in its own work (its interrupt handler: reaping, refilling, the kick). In a VM
// that work runs on the guest's vCPU thread, not the VMM's, so the device's figure leaves it
// out. Owned by one sample; only the loop's thread uses it.
class SampleClock {
 public:
  using Clock = std::chrono::steady_clock;

  // Starts the sample; returns its start. Guest work timed before it (the probe, a handshake,
  // buffers posted before the clock started) was never part of the sample's time and is
  // dropped.
  Clock::time_point Start() {
    guest_seconds_ = 0;
    start_ = Clock::now();
    return start_;
  }

  // Runs `work`, the fake guest's own, and counts its time as the guest's.
  template <typename Work>
  void Guest(Work&& work) {
    const Clock::time_point entry = Clock::now();
    std::forward<Work>(work)();
    guest_seconds_ += SecondsSince(entry);
  }

  // Ends the sample: `count` units moved since Start.
  [[nodiscard]] DeviceRate Rate(double count) const {
    const double elapsed = SecondsSince(start_);
    return {count / (elapsed - guest_seconds_), count / elapsed, guest_seconds_ / elapsed};
  }

 private:
  Clock::time_point start_ = Clock::now();
  double guest_seconds_ = 0;
};

// Wires `transport` into `loop` as VirtioDevices::Add wires a device into ember-vmm's loop
// (every queue's ioeventfd, every device EventSource), plus `on_interrupt` on the irqfd, which
// stands in for the guest's interrupt handler: every call is timed on `clock` as the guest's
// work (taking the interrupt off the irqfd included, which KVM does in a VM). The loop's
// epoll_wait reporting the irqfd, which ember-vmm's loop does not watch, stays counted against
// the device. `events` counts dispatches, for stall checks. Borrows everything; the transport,
// `clock` and `events` outlive the loop's use of them.
inline void WireTransport(const std::string& harness, base::EventLoop& loop,
                          virtio::MmioTransport& transport, SampleClock& clock,
                          std::function<void()> on_interrupt, std::uint64_t& events) {
  virtio::MmioTransport* t = &transport;
  SampleClock* guest_clock = &clock;
  std::uint64_t* count = &events;
  for (std::size_t q = 0; q < t->num_queues(); ++q) {
    CheckOk(harness,
            loop.Add(t->queue_event(q).Get(), EPOLLIN | EPOLLET,
                     [t, q, count](std::uint32_t) {
                       ++*count;
                       t->ProcessQueueNotification(q);
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
                   [on_interrupt = std::move(on_interrupt), guest_clock, count](std::uint32_t) {
                     ++*count;
                     guest_clock->Guest(on_interrupt);
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
// the other, printed as medians. `scale` turns a sample into the figure's unit. The device's
// figure is per second of the VMM thread's time; the same samples by the wall clock, the fake
// guest's work included, follow as NAME_with_guest against the same baseline, and a note says
// what share of the samples' time the guest took.
inline void MeasureAgainstBaseline(const std::string& name, const std::string& baseline_name,
                                   const std::string& unit, double scale,
                                   const std::function<DeviceRate()>& measured,
                                   const std::function<double()>& baseline, int runs,
                                   bool verbose) {
  (void)measured();
  (void)baseline();
  std::vector<double> measured_samples;
  std::vector<double> with_guest_samples;
  std::vector<double> guest_shares;
  std::vector<double> baseline_samples;
  for (int run = 0; run < runs; ++run) {
    for (int k = 0; k < 2; ++k) {
      if ((k + run) % 2 == 0) {
        const DeviceRate rate = measured();
        measured_samples.push_back(rate.per_second * scale);
        with_guest_samples.push_back(rate.wall_per_second * scale);
        guest_shares.push_back(rate.guest_share);
        if (verbose) {
          std::fprintf(stderr, "run %d: %s: %.2f %s (%.2f with the guest's work)\n", run,
                       name.c_str(), measured_samples.back(), unit.c_str(),
                       with_guest_samples.back());
        }
      } else {
        baseline_samples.push_back(baseline() * scale);
        if (verbose) {
          std::fprintf(stderr, "run %d: %s: %.2f %s\n", run, baseline_name.c_str(),
                       baseline_samples.back(), unit.c_str());
        }
      }
    }
  }
  const double plain = Median(baseline_samples);
  PrintFigure(name, Median(measured_samples), unit, baseline_name, plain);
  PrintFigure(name + "_with_guest", Median(with_guest_samples), unit, baseline_name, plain);
  char note[240];
  std::snprintf(note, sizeof note,
                "%s: the fake guest's own work, left out of %s and counted in %s_with_guest, "
                "took %.0f%% of the device samples' time",
                name.c_str(), name.c_str(), name.c_str(), 100 * Median(guest_shares));
  PrintNote(note);
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
