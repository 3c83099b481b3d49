#include "virtio/testing/fake_driver_queue.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "virtio/spec.h"
#include "vmm/base/logging.h"

namespace ember::virtio::testing {
namespace {

std::uint64_t AlignUp(std::uint64_t value, std::uint64_t align) {
  return (value + align - 1) & ~(align - 1);
}

struct Offsets {
  std::uint64_t avail;
  std::uint64_t used;
  std::uint64_t end;
};

Offsets Layout(std::uint16_t size) {
  Offsets o{};
  o.avail = 16ull * size;
  o.used = AlignUp(o.avail + 6 + 2ull * size, 4);
  o.end = o.used + 6 + 8ull * size;
  return o;
}

// A test that cannot lay out its queue is broken; stop it loudly.
void Check(const absl::Status& status) {
  if (!status.ok()) {
    EMBER_LOG(kError) << "fake driver: " << status;
    std::abort();
  }
}

}  // namespace

std::uint64_t FakeDriverQueue::Footprint(std::uint16_t size) { return Layout(size).end; }

FakeDriverQueue::FakeDriverQueue(const base::GuestMemory& memory, base::GuestAddress base,
                                 std::uint16_t size)
    : memory_(&memory), held_(size) {
  const Offsets o = Layout(size);
  layout_ = QueueLayout{size, base, base + o.avail, base + o.used};
  std::vector<std::uint8_t> zeros(o.end, 0);
  Check(memory.Write(base, zeros));
  for (std::uint16_t i = size; i > 0; --i) free_.push_back(static_cast<std::uint16_t>(i - 1));
}

void FakeDriverQueue::WriteU16(base::GuestAddress addr, std::uint16_t value) const {
  auto bytes = memory_->Slice(addr, sizeof(value));
  Check(bytes.status());
  // Ring fields are aligned u16s the device reads concurrently; publish like a driver's
  // virtio_store_mb / smp_wmb would.
  std::atomic_ref<std::uint16_t>(*reinterpret_cast<std::uint16_t*>(bytes->data()))
      .store(value, std::memory_order_release);
}

std::uint16_t FakeDriverQueue::ReadU16(base::GuestAddress addr) const {
  auto value = memory_->ReadObj<std::uint16_t>(addr);
  Check(value.status());
  std::atomic_thread_fence(std::memory_order_acquire);
  return *value;
}

std::uint16_t FakeDriverQueue::TakeFree() {
  if (free_.empty()) {
    EMBER_LOG(kError) << "fake driver: no free descriptors";
    std::abort();
  }
  std::uint16_t index = free_.back();
  free_.pop_back();
  return index;
}

void FakeDriverQueue::WriteDescriptor(std::uint16_t index, base::GuestAddress addr,
                                      std::uint32_t len, std::uint16_t flags,
                                      std::uint16_t next) {
  WriteIndirectDescriptor(layout_.desc_table, index, addr, len, flags, next);
}

void FakeDriverQueue::WriteIndirectDescriptor(base::GuestAddress table, std::uint16_t index,
                                              base::GuestAddress addr, std::uint32_t len,
                                              std::uint16_t flags, std::uint16_t next) {
  struct {
    std::uint64_t addr;
    std::uint32_t len;
    std::uint16_t flags;
    std::uint16_t next;
  } desc{addr, len, flags, next};
  static_assert(sizeof(desc) == 16);
  Check(memory_->WriteObj(table + 16ull * index, desc));
}

std::uint16_t FakeDriverQueue::AddChain(std::span<const FakeBuffer> buffers) {
  std::vector<std::uint16_t> indices;
  for (std::size_t i = 0; i < buffers.size(); ++i) indices.push_back(TakeFree());
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    const bool last = i + 1 == buffers.size();
    std::uint16_t flags = static_cast<std::uint16_t>(
        (buffers[i].device_writable ? kDescFlagWrite : 0) | (last ? 0 : kDescFlagNext));
    WriteDescriptor(indices[i], buffers[i].addr, buffers[i].len, flags,
                    last ? 0 : indices[i + 1]);
  }
  const std::uint16_t head = indices.front();
  held_[head] = std::move(indices);
  Publish(head);
  return head;
}

std::uint16_t FakeDriverQueue::AddIndirectChain(base::GuestAddress table,
                                                std::span<const FakeBuffer> buffers) {
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    const bool last = i + 1 == buffers.size();
    std::uint16_t flags = static_cast<std::uint16_t>(
        (buffers[i].device_writable ? kDescFlagWrite : 0) | (last ? 0 : kDescFlagNext));
    WriteIndirectDescriptor(table, static_cast<std::uint16_t>(i), buffers[i].addr,
                            buffers[i].len, flags, static_cast<std::uint16_t>(last ? 0 : i + 1));
  }
  const std::uint16_t head = TakeFree();
  WriteDescriptor(head, table, static_cast<std::uint32_t>(16 * buffers.size()),
                  kDescFlagIndirect, 0);
  held_[head] = {head};
  Publish(head);
  return head;
}

void FakeDriverQueue::Publish(std::uint16_t head) {
  const std::uint16_t slot = static_cast<std::uint16_t>(avail_idx_ & (layout_.size - 1));
  WriteU16(layout_.avail_ring + 4 + 2ull * slot, head);
  SetAvailIdx(static_cast<std::uint16_t>(avail_idx_ + 1));
}

void FakeDriverQueue::SetAvailIdx(std::uint16_t idx) {
  avail_idx_ = idx;
  WriteU16(layout_.avail_ring + 2, idx);
}

void FakeDriverQueue::SetAvailFlags(std::uint16_t flags) { WriteU16(layout_.avail_ring, flags); }

void FakeDriverQueue::SetUsedEvent(std::uint16_t used_event) {
  WriteU16(layout_.avail_ring + 4 + 2ull * layout_.size, used_event);
}

std::uint16_t FakeDriverQueue::AvailIdx() const { return ReadU16(layout_.avail_ring + 2); }
std::uint16_t FakeDriverQueue::UsedIdx() const { return ReadU16(layout_.used_ring + 2); }
std::uint16_t FakeDriverQueue::UsedFlags() const { return ReadU16(layout_.used_ring); }
std::uint16_t FakeDriverQueue::AvailEvent() const {
  return ReadU16(layout_.used_ring + 4 + 8ull * layout_.size);
}

std::optional<UsedElement> FakeDriverQueue::PopUsed() {
  if (UsedIdx() == last_used_) return std::nullopt;
  const std::uint16_t slot = static_cast<std::uint16_t>(last_used_ & (layout_.size - 1));
  auto elem = memory_->ReadObj<UsedElement>(layout_.used_ring + 4 + 8ull * slot);
  Check(elem.status());
  ++last_used_;
  if (elem->id < held_.size()) {
    for (std::uint16_t index : held_[elem->id]) free_.push_back(index);
    held_[elem->id].clear();
  }
  return *elem;
}

base::GuestAddress FakeGuestAllocator::Alloc(std::uint64_t len, std::uint64_t align) {
  base::GuestAddress addr = AlignUp(next_, align);
  if (addr + len > end_ || addr + len < addr) {
    EMBER_LOG(kError) << "fake guest allocator exhausted";
    std::abort();
  }
  next_ = addr + len;
  return addr;
}

}  // namespace ember::virtio::testing
