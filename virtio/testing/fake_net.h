#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "virtio/net/tap.h"
#include "virtio/testing/fake_driver_queue.h"
#include "vmm/base/guest_memory.h"
#include "vmm/base/unique_fd.h"

namespace ember::virtio::testing {

// The test's end of a stand-in tap (tests and benchmarks only): a SOCK_SEQPACKET socketpair,
// so that, as on a tap, one read or write is one frame (virtio-net header included). MakeTap
// hands the device its end; the peer records the ioctls the device would have made. Must
// outlive the tap it made.
class FakeTapPeer {
 public:
  FakeTapPeer();

  // The device's end, non-blocking. Call once.
  [[nodiscard]] std::unique_ptr<net::Tap> MakeTap();

  // Sends one frame towards the device; false when the socket buffer is full.
  bool Send(std::span<const std::uint8_t> frame) const;
  // The next frame the device wrote, nullopt when there is none.
  [[nodiscard]] std::optional<std::vector<std::uint8_t>> Receive() const;

  [[nodiscard]] unsigned offloads() const { return offloads_; }
  [[nodiscard]] int vnet_header_size() const { return vnet_header_size_; }
  // Makes the device's SetOffloads fail, as a kernel refusing an offload would.
  void FailOffloads() { fail_offloads_ = true; }

 private:
  friend class FakeTap;
  base::UniqueFd device_end_;
  base::UniqueFd peer_end_;
  unsigned offloads_ = ~0u;     // ~0: never set
  int vnet_header_size_ = -1;  // -1: never set
  bool fail_offloads_ = false;
};

// One frame as the guest driver sees it: the 12-byte virtio-net header and the bytes after.
struct NetFrame {
  std::vector<std::uint8_t> header;
  std::vector<std::uint8_t> payload;
};

// The virtio-net side of a guest driver (tests and benchmarks only), on a FakeDriverQueue
// for RX and one for TX. Borrows everything it is given.
class FakeNetDriver {
 public:
  FakeNetDriver(const base::GuestMemory& memory, FakeDriverQueue& rx, FakeDriverQueue& tx,
                FakeGuestAllocator& alloc)
      : memory_(&memory), rx_(&rx), tx_(&tx), alloc_(&alloc) {}

  // Posts `count` RX buffers of `size` bytes, each one chain of `segments` descriptors.
  void AddRxBuffers(std::size_t count, std::uint32_t size, std::uint32_t segments = 1);
  // Pops the next used RX entry and returns the bytes the device wrote into that chain
  // (used length of them), nullopt when there is none.
  [[nodiscard]] std::optional<std::vector<std::uint8_t>> PopRx();

  // Makes `bytes` (header and frame) available on TX, split into `segments` descriptors.
  std::uint16_t AddTx(std::span<const std::uint8_t> bytes, std::uint32_t segments = 1);
  // A TX chain with arbitrary buffers (for malformed layouts); the buffers are allocated and
  // filled with `bytes` in order, the writable flag taken from each entry of `writable`.
  std::uint16_t AddTxRaw(std::span<const std::uint8_t> bytes,
                         std::span<const std::uint32_t> lengths, std::span<const bool> writable);

 private:
  const base::GuestMemory* memory_;
  FakeDriverQueue* rx_;
  FakeDriverQueue* tx_;
  FakeGuestAllocator* alloc_;
  std::map<std::uint16_t, std::vector<FakeBuffer>> rx_buffers_;  // by head
};

// A 12-byte virtio_net_hdr_v1 followed by `payload`.
[[nodiscard]] std::vector<std::uint8_t> MakeNetFrame(std::span<const std::uint8_t> header12,
                                                     std::span<const std::uint8_t> payload);

}  // namespace ember::virtio::testing
