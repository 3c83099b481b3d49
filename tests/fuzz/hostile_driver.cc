#include "tests/fuzz/hostile_driver.h"

#include <cstdlib>
#include <utility>

namespace ember::fuzz {
namespace {

using virtio::testing::FakeDriverQueue;

// The actions an input is made of, one byte each, then their arguments.
enum Action : std::uint8_t {
  kWriteDescriptor,  // a raw descriptor: any address, length, flags, next
  kWriteChain,       // a well-formed chain of 1-4 buffers in RAM, published
  kPublish,          // a head into the next available slot
  kSetAvailIdx,      // the available index, anywhere
  kWriteMemory,      // up to 64 bytes anywhere in RAM (request headers, packet headers)
  kKick,             // QueueNotify and the loop's HandleQueueEvent
  kServe,            // one turn of the loop over the device's event sources
  kWriteRegister,    // any register or config-space offset, any value
  kReadRegister,     // reads have effects too (InterruptStatus, ConfigGeneration)
  kAckInterrupt,
  kDeviceAction,  // the fuzzer's own: a host peer's move
  kActionCount,
};

// An address the guest might use: mostly inside RAM (buffers, rings), sometimes anywhere.
std::uint64_t GuestAddress(FuzzedDataProvider& input) {
  if (input.ConsumeBool()) return input.ConsumeIntegral<std::uint64_t>();
  return input.ConsumeIntegralInRange<std::uint64_t>(0, HostileDriver::kMemSize);
}

}  // namespace

const base::GuestMemory& HostileDriver::Memory() {
  static const base::GuestMemory memory = base::GuestMemory::Create({{0, kMemSize}}).value();
  return memory;
}

bool HostileDriver::Attach(std::unique_ptr<virtio::VirtioDevice> device, bool probe) {
  const base::GuestMemory& memory = Memory();
  std::span<std::uint8_t> ram = memory.Slice(0, kMemSize).value();
  std::memset(ram.data(), 0, ram.size());
  device_ = device.get();
  const std::size_t queue_count = device->queue_max_sizes().size();
  auto transport = virtio::MmioTransport::Create(memory, std::move(device),
                                                 base::EventFd::Create().value(), metrics_);
  if (!transport.ok()) return false;
  transport_ = std::move(transport).value();
  driver_ = std::make_unique<virtio::testing::FakeMmioDriver>(*transport_);
  std::vector<virtio::QueueLayout> layouts;
  for (std::size_t i = 0; i < queue_count; ++i) {
    const std::uint16_t size = std::min(kQueueSize, device_->queue_max_sizes()[i]);
    queues_.emplace_back(memory, kRings + i * kRingStride, size);
    layouts.push_back(queues_.back().layout());
  }
  if (!probe) return true;
  // Every feature the device offers: the paths behind each are reachable.
  return driver_->Initialize(driver_->DeviceFeatures(), layouts).ok();
}

void HostileDriver::WriteChain(FuzzedDataProvider& input) {
  FakeDriverQueue& queue =
      queues_[input.ConsumeIntegralInRange<std::size_t>(0, queues_.size() - 1)];
  const std::uint16_t size = queue.layout().size;
  const auto head = input.ConsumeIntegralInRange<std::uint16_t>(0, size - 1);
  const int count = input.ConsumeIntegralInRange(1, 4);
  std::uint16_t index = head;
  for (int i = 0; i < count; ++i) {
    const std::uint64_t addr =
        kBuffers +
        input.ConsumeIntegralInRange<std::uint64_t>(0, (kMemSize - kBuffers) / 16 - 1) * 16;
    const auto len = input.ConsumeIntegralInRange<std::uint32_t>(0, 4096);
    std::uint16_t flags = input.ConsumeBool() ? virtio::kDescFlagWrite : 0;
    const auto next = static_cast<std::uint16_t>((index + 1) % size);
    if (i + 1 < count) flags |= virtio::kDescFlagNext;
    queue.WriteDescriptor(index, addr, len, flags, next);
    index = next;
  }
  queue.Publish(head);
}

void HostileDriver::Run(FuzzedDataProvider& input,
                        const std::function<void(FuzzedDataProvider&)>& device_action) {
  const base::GuestMemory& memory = Memory();
  // Bounds the work of one input whatever its length.
  for (int step = 0; step < 512 && input.remaining_bytes() > 0; ++step) {
    const auto action = static_cast<Action>(input.ConsumeIntegral<std::uint8_t>() % kActionCount);
    FakeDriverQueue& queue =
        queues_[input.ConsumeIntegralInRange<std::size_t>(0, queues_.size() - 1)];
    switch (action) {
      case kWriteDescriptor: {
        const auto index = input.ConsumeIntegralInRange<std::uint16_t>(0, queue.layout().size - 1);
        const std::uint64_t addr = GuestAddress(input);
        queue.WriteDescriptor(index, addr, input.ConsumeIntegral<std::uint32_t>(),
                              input.ConsumeIntegral<std::uint16_t>(),
                              input.ConsumeIntegral<std::uint16_t>());
        break;
      }
      case kWriteChain:
        WriteChain(input);
        break;
      case kPublish:
        queue.Publish(input.ConsumeIntegral<std::uint16_t>());
        break;
      case kSetAvailIdx:
        queue.SetAvailIdx(input.ConsumeIntegral<std::uint16_t>());
        break;
      case kWriteMemory: {
        const auto addr = input.ConsumeIntegralInRange<std::uint64_t>(0, kMemSize - 1);
        std::vector<std::uint8_t> bytes =
            input.ConsumeBytes<std::uint8_t>(input.ConsumeIntegralInRange<std::size_t>(0, 64));
        const std::size_t len = std::min<std::size_t>(bytes.size(), kMemSize - addr);
        std::span<std::uint8_t> dest = memory.Slice(addr, len).value();
        std::copy_n(bytes.begin(), len, dest.begin());
        break;
      }
      case kKick: {
        const auto index = static_cast<std::size_t>(&queue - &queues_[0]);
        driver_->Write32(virtio::mmio::kQueueNotify, static_cast<std::uint32_t>(index));
        transport_->HandleQueueEvent(index);
        break;
      }
      case kServe:
        ServeEvents();
        break;
      case kWriteRegister: {
        // Registers and the first 256 bytes of config space, 1, 2 or 4 bytes wide.
        const auto offset = input.ConsumeIntegralInRange<std::uint64_t>(0, 0x1ff);
        const std::uint32_t value = input.ConsumeIntegral<std::uint32_t>();
        const std::size_t width = std::size_t{1} << input.ConsumeIntegralInRange(0, 2);
        transport_->Write(offset, std::span(reinterpret_cast<const std::uint8_t*>(&value), width));
        break;
      }
      case kReadRegister: {
        std::uint32_t value = 0;
        const auto offset = input.ConsumeIntegralInRange<std::uint64_t>(0, 0x1ff);
        const std::size_t width = std::size_t{1} << input.ConsumeIntegralInRange(0, 2);
        transport_->Read(offset, std::span(reinterpret_cast<std::uint8_t*>(&value), width));
        break;
      }
      case kAckInterrupt:
        driver_->Write32(virtio::mmio::kInterruptAck,
                         driver_->Read32(virtio::mmio::kInterruptStatus));
        break;
      case kDeviceAction:
        if (device_action) device_action(input);
        break;
      case kActionCount:
        std::abort();
    }
  }
  ServeEvents();
}

void HostileDriver::ServeEvents() {
  // A few turns: one event may make another source readable (a completion, a reply).
  for (int turn = 0; turn < 4; ++turn) {
    bool any = false;
    for (const virtio::EventSource& source : device_->EventSources()) {
      pollfd pfd{source.fd, POLLIN, 0};
      if (::poll(&pfd, 1, 0) != 1) continue;
      if (source.edge_triggered) {
        std::uint64_t signals = 0;
        (void)!::read(source.fd, &signals, sizeof(signals));
      }
      source.on_readable();
      any = true;
    }
    if (!any) return;
  }
}

}  // namespace ember::fuzz
