#pragma once

#include <fuzzer/FuzzedDataProvider.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "virtio/device.h"
#include "virtio/mmio/mmio_transport.h"
#include "virtio/mmio/registers.h"
#include "virtio/spec.h"
#include "virtio/testing/fake_driver_queue.h"
#include "virtio/testing/fake_mmio_driver.h"
#include "vmm/base/event_fd.h"
#include "vmm/base/guest_memory.h"
#include "vmm/base/metrics.h"

namespace ember::fuzz {

// A hostile guest driver for the device fuzzers: the fuzzer's input, read as a list of
// actions, drives a device behind the real virtio-mmio transport through guest memory, the
// way a guest can: raw descriptors (any address, length, flags, next), published heads and
// available indices, bytes written anywhere in RAM, notifications, register writes in any
// order (features, queue set-up, status, reset, config space) and turns of the VMM loop.
// Whatever it does, the device must not crash, read or write outside guest RAM, or hang.
//
// The driver starts with the device probed (the features it offers accepted, every queue
// laid out by FakeDriverQueue, DRIVER_OK) so that inputs reach the request paths quickly; the
// register actions can undo any of that. Single-threaded, as the VMM loop it stands in for.
class HostileDriver {
 public:
  static constexpr std::uint64_t kMemSize = 1 << 20;
  static constexpr std::uint16_t kQueueSize = 64;
  // Where the rings of queue i start; buffers lie from kBuffers to the end of RAM.
  static constexpr std::uint64_t kRings = 0x1000;
  static constexpr std::uint64_t kRingStride = 0x4000;
  static constexpr std::uint64_t kBuffers = 0x10000;

  // The guest RAM, made once per process: a memfd per input would dominate the run time.
  // Zeroed by each HostileDriver.
  static const base::GuestMemory& Memory();

  // Wires `device` behind a transport and, with `probe`, probes it (without, the device
  // stands as before a restore). Returns false (the input is skipped) when the transport
  // refuses it.
  bool Attach(std::unique_ptr<virtio::VirtioDevice> device, bool probe = true);

  // Runs the input's actions; `device_action` is the fuzzer's own action (a host peer's move:
  // a frame from the tap, a host socket connecting), given the provider to read its
  // arguments from.
  void Run(FuzzedDataProvider& input,
           const std::function<void(FuzzedDataProvider&)>& device_action = nullptr);

  // One turn of the VMM loop over the device's event sources (poll, no waiting).
  void ServeEvents();

  [[nodiscard]] virtio::MmioTransport& transport() { return *transport_; }
  [[nodiscard]] base::MetricsRegistry& metrics() { return metrics_; }

 private:
  void WriteChain(FuzzedDataProvider& input);

  base::MetricsRegistry metrics_;
  std::deque<virtio::testing::FakeDriverQueue> queues_;
  std::unique_ptr<virtio::MmioTransport> transport_;
  std::unique_ptr<virtio::testing::FakeMmioDriver> driver_;
  virtio::VirtioDevice* device_ = nullptr;  // owned by transport_
};

}  // namespace ember::fuzz
