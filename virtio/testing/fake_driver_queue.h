#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "virtio/queue.h"
#include "vmm/base/guest_memory.h"

namespace ember::virtio::testing {

// One buffer the fake driver places in a chain.
struct FakeBuffer {
  base::GuestAddress addr = 0;
  std::uint32_t len = 0;
  bool device_writable = false;
};

// An entry of the used ring as the driver reads it.
struct UsedElement {
  std::uint32_t id = 0;
  std::uint32_t len = 0;
};

// The driver side of one split virtqueue (tests and benchmarks only, like rust-vmm's
// MockSplitQueue): writes real descriptor tables and available rings into guest memory and
// reads the used ring back, exactly as a guest driver would, so devices are tested through the
// layouts they meet in a VM. Single-threaded; borrows `memory`, which must outlive it.
class FakeDriverQueue {
 public:
  // Bytes a queue of `size` occupies (descriptor table, available ring, used ring, each
  // aligned as the spec requires).
  [[nodiscard]] static std::uint64_t Footprint(std::uint16_t size);

  // Lays out a queue of `size` at `base` (16-byte aligned, Footprint(size) bytes of guest
  // RAM), with zeroed rings and every descriptor free.
  FakeDriverQueue(const base::GuestMemory& memory, base::GuestAddress base, std::uint16_t size);

  [[nodiscard]] const QueueLayout& layout() const { return layout_; }

  // Writes `buffers` as one chain into free descriptors and makes it available. Returns the
  // head index. The descriptors return to the free list when PopUsed reports the head.
  std::uint16_t AddChain(std::span<const FakeBuffer> buffers);
  // Writes `buffers` as an indirect table at `table` (16 * buffers.size() bytes of guest RAM)
  // and makes available one descriptor pointing at it.
  std::uint16_t AddIndirectChain(base::GuestAddress table, std::span<const FakeBuffer> buffers);

  // Raw access for malformed layouts: these write exactly what they are told.
  void WriteDescriptor(std::uint16_t index, base::GuestAddress addr, std::uint32_t len,
                       std::uint16_t flags, std::uint16_t next);
  void WriteIndirectDescriptor(base::GuestAddress table, std::uint16_t index,
                               base::GuestAddress addr, std::uint32_t len, std::uint16_t flags,
                               std::uint16_t next);
  // Puts `head` in the next available-ring slot and advances the available index.
  void Publish(std::uint16_t head);
  void SetAvailIdx(std::uint16_t idx);
  void SetAvailFlags(std::uint16_t flags);
  void SetUsedEvent(std::uint16_t used_event);

  [[nodiscard]] std::uint16_t AvailIdx() const;
  [[nodiscard]] std::uint16_t UsedIdx() const;
  [[nodiscard]] std::uint16_t UsedFlags() const;
  [[nodiscard]] std::uint16_t AvailEvent() const;
  // The next used entry the driver has not consumed, nullopt when the device added none.
  std::optional<UsedElement> PopUsed();
  [[nodiscard]] std::size_t free_descriptors() const { return free_.size(); }

 private:
  // `offset` bytes into the queue's area (descriptor table, then the rings).
  void WriteU16(std::uint64_t offset, std::uint16_t value) const;
  [[nodiscard]] std::uint16_t ReadU16(std::uint64_t offset) const;
  std::uint16_t TakeFree();

  const base::GuestMemory* memory_;
  QueueLayout layout_;
  // The queue's whole area, sliced (bounds-checked) once: the benchmarks drive the queue
  // millions of times a second and the fake's own cost is part of what they report.
  std::span<std::uint8_t> area_;
  std::uint64_t avail_offset_ = 0;
  std::uint64_t used_offset_ = 0;
  std::uint16_t avail_idx_ = 0;
  std::uint16_t last_used_ = 0;
  std::vector<std::uint16_t> free_;
  // How many descriptors each outstanding head holds (0: none), and the `next` each
  // descriptor was given, so PopUsed can return a chain to free_ as Linux's detach_buf does,
  // without reading back what the device could have changed.
  std::vector<std::uint16_t> chain_length_;
  std::vector<std::uint16_t> next_;
};

// Hands out guest addresses from a range, for test buffers. Never frees.
class FakeGuestAllocator {
 public:
  FakeGuestAllocator(base::GuestAddress start, std::uint64_t size)
      : next_(start), end_(start + size) {}
  // `len` bytes aligned to `align` (a power of two); aborts when the range is exhausted.
  base::GuestAddress Alloc(std::uint64_t len, std::uint64_t align = 16);

 private:
  base::GuestAddress next_;
  base::GuestAddress end_;
};

}  // namespace ember::virtio::testing
