#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "virtio/testing/fake_driver_queue.h"
#include "vmm/base/guest_memory.h"

namespace ember::virtio::testing {

// Where one virtio-blk request lives in guest memory.
struct BlockRequestBuffers {
  base::GuestAddress header = 0;  // 16 bytes: type, reserved, sector
  base::GuestAddress data = 0;
  std::uint32_t data_len = 0;
  base::GuestAddress status = 0;  // 1 byte
};

// The virtio-blk side of a guest driver (tests and benchmarks only): frames requests the way
// Linux's virtio_blk does (header, data, status) on top of a FakeDriverQueue. Borrows
// everything it is given.
class FakeBlockDriver {
 public:
  FakeBlockDriver(const base::GuestMemory& memory, FakeDriverQueue& queue,
                  FakeGuestAllocator& alloc)
      : memory_(&memory), queue_(&queue), alloc_(&alloc) {}

  // Fresh buffers for a request carrying `data_len` data bytes.
  [[nodiscard]] BlockRequestBuffers Allocate(std::uint32_t data_len);

  // Writes the header and makes the request available. The data is device-writable for
  // IN and GET_ID, device-readable otherwise; it is split into `segments` descriptors of
  // (nearly) equal size, and goes through an indirect table when `indirect`. Returns the head.
  std::uint16_t Add(const BlockRequestBuffers& buffers, std::uint32_t type, std::uint64_t sector,
                    std::uint32_t segments = 1, bool indirect = false);
  // Allocate + Add; the status byte starts at 0xff so an unanswered request shows.
  BlockRequestBuffers AddNew(std::uint32_t type, std::uint64_t sector, std::uint32_t data_len,
                             std::uint32_t segments = 1, bool indirect = false);

  [[nodiscard]] std::uint8_t Status(const BlockRequestBuffers& buffers) const;
  void WriteData(const BlockRequestBuffers& buffers, std::span<const std::uint8_t> data) const;
  [[nodiscard]] std::vector<std::uint8_t> ReadData(const BlockRequestBuffers& buffers) const;

 private:
  // The host bytes of [addr, addr+len); a request laid out outside guest memory stops the
  // test. Without building a Status: the benchmark adds a million requests a second.
  [[nodiscard]] std::uint8_t* Host(base::GuestAddress addr, std::uint64_t len) const;

  const base::GuestMemory* memory_;
  FakeDriverQueue* queue_;
  FakeGuestAllocator* alloc_;
  // The chain Add builds, kept so that the benchmark's millions of requests do not each
  // allocate one.
  std::vector<FakeBuffer> chain_;
};

}  // namespace ember::virtio::testing
