#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "virtio/testing/fake_driver_queue.h"
#include "virtio/vsock/packet.h"
#include "vmm/base/guest_memory.h"

namespace ember::virtio::testing {

// The fake guest's CID, and the receive buffer it advertises on every stream.
inline constexpr std::uint64_t kFakeGuestCid = 3;
inline constexpr std::uint32_t kFakeGuestBufAlloc = 64 * 1024;

// A stream header of `op` from the fake guest's `guest_port` to the host's `host_port`, as the
// guest's driver fills one in: `fwd_cnt` bytes of the stream consumed so far, `flags` (a
// SHUTDOWN's), len 0 (FakeVsockDriver::Send sets it).
[[nodiscard]] vsock::Header GuestHeader(vsock::Op op, std::uint32_t guest_port,
                                        std::uint32_t host_port, std::uint32_t fwd_cnt = 0,
                                        std::uint32_t flags = 0);

struct VsockPacket {
  vsock::Header header;
  std::vector<std::uint8_t> payload;
};

// The virtio-vsock side of a guest driver (tests and benchmarks only): RX buffers, TX
// packets and event buffers on three FakeDriverQueues, laid out as Linux's
// virtio_transport does (header and payload in one chain). Borrows everything it is given.
class FakeVsockDriver {
 public:
  FakeVsockDriver(const base::GuestMemory& memory, FakeDriverQueue& rx, FakeDriverQueue& tx,
                  FakeDriverQueue& event, FakeGuestAllocator& alloc)
      : memory_(&memory), rx_(&rx), tx_(&tx), event_(&event), alloc_(&alloc) {}

  // Posts `count` RX buffers of `size` bytes (header included).
  void AddRxBuffers(std::size_t count, std::uint32_t size = 4096);
  // Posts `count` RX chains of several descriptors, of `sizes` bytes each in order (the
  // header may span them), as a driver that splits header and payload does.
  void AddSplitRxBuffers(std::size_t count, std::span<const std::uint32_t> sizes);
  // The next packet the device placed in an RX buffer, nullopt when there is none.
  [[nodiscard]] std::optional<VsockPacket> PopRx();

  // Sends `header` (its len set to payload.size() unless `keep_len`) and `payload` on TX,
  // the header and payload in separate descriptors.
  std::uint16_t Send(vsock::Header header, std::span<const std::uint8_t> payload = {},
                     bool keep_len = false);
  // Sends raw bytes as one buffer (for malformed packets); `writable` flips its direction.
  std::uint16_t SendRaw(std::span<const std::uint8_t> bytes, bool writable = false);
  // How many TX chains the device has returned since the last call.
  std::size_t ReapTx();

  void AddEventBuffers(std::size_t count);
  // The next event id the device reported.
  [[nodiscard]] std::optional<std::uint32_t> PopEvent();

 private:
  const base::GuestMemory* memory_;
  FakeDriverQueue* rx_;
  FakeDriverQueue* tx_;
  FakeDriverQueue* event_;
  FakeGuestAllocator* alloc_;
  std::map<std::uint16_t, std::vector<FakeBuffer>> rx_buffers_;  // by head
  std::map<std::uint16_t, FakeBuffer> event_buffers_;  // by head
};

}  // namespace ember::virtio::testing
