#pragma once

#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "virtio/device.h"
#include "virtio/mmio/mmio_transport.h"
#include "virtio/mmio/registers.h"
#include "virtio/spec.h"
#include "virtio/testing/fake_clock.h"
#include "virtio/testing/fake_driver_queue.h"
#include "virtio/testing/fake_mmio_driver.h"
#include "vmm/base/event_fd.h"
#include "vmm/base/guest_memory.h"
#include "vmm/base/metrics.h"

namespace ember::virtio::testing {

// Where a device test's guest RAM, the driver's rings and its buffers lie.
struct HarnessLayout {
  std::uint64_t memory_size = 0;
  std::uint16_t queue_size = 0;
  // One ring per device queue, in queue order; each Footprint(queue_size) bytes from there.
  std::vector<base::GuestAddress> queues;
  // The start of the buffers' range, which runs to the end of guest RAM.
  base::GuestAddress buffers = 0;
};

// The wiring every virtio device test shares, so a device's tests hold only what is the
// device's own: guest memory, the driver's rings and an allocator for its buffers; a device of
// type `Device` behind the real MMIO transport, its registers driven by FakeMmioDriver; the
// clock, metrics and a stand-in for the VMM loop serving the device's event sources. `Base`
// is the gtest fixture to derive from (::testing::Test, or TestWithParam<P> for a
// parameterised suite). Single-threaded, like the VMM loop it stands in for.
template <typename Device, typename Base = ::testing::Test>
class DeviceHarness : public Base {
 protected:
  explicit DeviceHarness(const HarnessLayout& layout)
      : memory_(base::GuestMemory::Create({{0, layout.memory_size}}).value()),
        alloc_(layout.buffers, layout.memory_size - layout.buffers) {
    for (base::GuestAddress ring : layout.queues) {
      queues_.emplace_back(memory_, ring, layout.queue_size);
    }
  }

  // The device goes before the fixture's own members (a tap's peer, a socket directory), which
  // a device may use until it is gone.
  void TearDown() override {
    DetachDevice();
    Base::TearDown();
  }

  // The driver's ring of queue `index` (references stay valid for the fixture's life).
  FakeDriverQueue& queue(std::size_t index) { return queues_.at(index); }
  std::vector<QueueLayout> QueueLayouts() const {
    std::vector<QueueLayout> layouts;
    for (const FakeDriverQueue& ring : queues_) layouts.push_back(ring.layout());
    return layouts;
  }

  // Puts `device` behind a new transport over the guest memory and gives the driver its
  // registers, without probing: where a VMM stands before the guest's driver loads. A device
  // that failed to build fails the test.
  void AttachDevice(absl::StatusOr<std::unique_ptr<Device>> device) {
    ASSERT_TRUE(device.ok()) << device.status();
    const absl::Status wired = Wire(std::move(device).value());
    ASSERT_TRUE(wired.ok()) << wired;
  }
  // What Linux's probe does: accepts `features` and sets up every queue, then DRIVER_OK.
  void Probe(std::uint64_t features) {
    const absl::Status init = driver_->Initialize(features, QueueLayouts());
    ASSERT_TRUE(init.ok()) << init;
  }
  void StartDevice(absl::StatusOr<std::unique_ptr<Device>> device, std::uint64_t features) {
    ASSERT_NO_FATAL_FAILURE(AttachDevice(std::move(device)));
    Probe(features);
  }
  // The VMM process goes, with the transport and the device (and the host resources they hold).
  void DetachDevice() {
    driver_.reset();
    transport_.reset();
    device_ = nullptr;
  }
  // What a restore in a new VMM process does: the old device goes first (so that what it
  // held, a socket path, a tap, is free again), then `make`'s device is put behind a fresh
  // transport over the same guest memory and into `state`. The driver's rings and buffers
  // carry on unchanged, as the guest's do.
  absl::Status RestoreDevice(const VirtioDeviceSnapshot& state,
                             const std::function<absl::StatusOr<std::unique_ptr<Device>>()>& make) {
    DetachDevice();
    absl::StatusOr<std::unique_ptr<Device>> device = make();
    if (!device.ok()) return device.status();
    if (absl::Status wired = Wire(std::move(device).value()); !wired.ok()) return wired;
    return transport_->RestoreState(state);
  }

  // The guest writes QueueNotify; the VMM loop sees the ioeventfd and lets the device work.
  void Kick(std::size_t index = 0) {
    driver_->Write32(mmio::kQueueNotify, static_cast<std::uint32_t>(index));
    transport_->HandleQueueEvent(index);
  }

  // One turn of the VMM loop: waits up to `timeout_ms` on each of the device's event sources
  // and runs the handler of each that became readable. Returns how many did.
  int ServeEvents(int timeout_ms = 0) {
    int ready = 0;
    for (const EventSource& source : device_->EventSources()) {
      pollfd pfd{source.fd, POLLIN, 0};
      if (::poll(&pfd, 1, timeout_ms) != 1) continue;
      // poll is level-triggered: drain what the loop would watch edge-triggered, before the
      // handler, so the next poll waits for a new signal.
      if (source.edge_triggered) {
        std::uint64_t signals = 0;
        EXPECT_EQ(::read(source.fd, &signals, sizeof(signals)),
                  static_cast<ssize_t>(sizeof(signals)));
      }
      source.on_readable();
      ++ready;
    }
    return ready;
  }
  // Turns of the loop until no event source is readable; returns how many turns found one.
  // A device whose sources never go idle (a busy loop) fails the test.
  int ServeUntilIdle() {
    constexpr int kMaxTurns = 1000;
    for (int turn = 0; turn < kMaxTurns; ++turn) {
      if (ServeEvents() == 0) return turn;
    }
    ADD_FAILURE() << "the device's event sources never went idle";
    return kMaxTurns;
  }
  // Serves the device's events until `count` used entries arrived on `ring` (or about 5 s
  // passed); returns those that did.
  std::vector<UsedElement> WaitForUsed(std::size_t count, FakeDriverQueue& ring) {
    std::vector<UsedElement> used;
    for (int spins = 0; spins < 5000 && used.size() < count; ++spins) {
      while (auto elem = ring.PopUsed()) used.push_back(*elem);
      if (used.size() >= count) break;
      ServeEvents(/*timeout_ms=*/1);
    }
    return used;
  }
  std::vector<UsedElement> WaitForUsed(std::size_t count) { return WaitForUsed(count, queue(0)); }

  // A counter of the device's metric group (named after the device).
  std::uint64_t Metric(const std::string& name) {
    return metrics_.Get(metrics_group_, name)->Get();
  }
  bool NeedsReset() const { return (transport_->status() & kStatusNeedsReset) != 0; }

  base::MetricsRegistry metrics_;
  FakeClock clock_;  // for devices that take a Clock
  base::GuestMemory memory_;
  std::deque<FakeDriverQueue> queues_;  // a deque: queue() hands out references
  FakeGuestAllocator alloc_;
  Device* device_ = nullptr;  // owned by transport_
  std::unique_ptr<MmioTransport> transport_;
  std::unique_ptr<FakeMmioDriver> driver_;

 private:
  // The transport around `device`, and the driver's register side on it.
  absl::Status Wire(std::unique_ptr<Device> device) {
    Device* raw = device.get();
    metrics_group_ = raw->name();
    auto transport = MmioTransport::Create(memory_, std::move(device),
                                           base::EventFd::Create().value(), metrics_);
    if (!transport.ok()) return transport.status();
    device_ = raw;
    transport_ = std::move(transport).value();
    driver_ = std::make_unique<FakeMmioDriver>(*transport_);
    return absl::OkStatus();
  }

  std::string metrics_group_;
};

}  // namespace ember::virtio::testing
