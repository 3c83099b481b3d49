#include "virtio/testing/fake_driver_queue.h"

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "absl/container/inlined_vector.h"

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

// struct virtq_desc as the driver writes it.
struct RawDesc {
  std::uint64_t addr;
  std::uint32_t len;
  std::uint16_t flags;
  std::uint16_t next;
};
static_assert(sizeof(RawDesc) == 16);

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
    : memory_(&memory), chain_length_(size, 0), next_(size, 0) {
  const Offsets o = Layout(size);
  layout_ = QueueLayout{size, base, base + o.avail, base + o.used};
  avail_offset_ = o.avail;
  used_offset_ = o.used;
  auto area = memory.Slice(base, o.end);
  Check(area.status());
  area_ = *area;
  std::memset(area_.data(), 0, area_.size());
  for (std::uint16_t i = size; i > 0; --i) free_.push_back(static_cast<std::uint16_t>(i - 1));
}

void FakeDriverQueue::WriteU16(std::uint64_t offset, std::uint16_t value) const {
  // Ring fields are aligned u16s inside area_ (the layout keeps them so) that the device
  // reads concurrently; publish like a driver's virtio_store_mb / smp_wmb would.
  std::atomic_ref<std::uint16_t>(
      *reinterpret_cast<std::uint16_t*>(area_.subspan(offset, 2).data()))
      .store(value, std::memory_order_release);
}

std::uint16_t FakeDriverQueue::ReadU16(std::uint64_t offset) const {
  // Aligned inside area_, as above.
  return std::atomic_ref<std::uint16_t>(
             *reinterpret_cast<std::uint16_t*>(area_.subspan(offset, 2).data()))
      .load(std::memory_order_acquire);
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
  if (index >= layout_.size) {
    // Outside the table on purpose (a malformed-layout test): write where it points.
    WriteIndirectDescriptor(layout_.desc_table, index, addr, len, flags, next);
    return;
  }
  // Field by field (struct virtq_desc): copying in a struct built just before stalls on store
  // forwarding, which the block benchmark would count against the device.
  std::uint8_t* desc = area_.subspan(16ull * index, sizeof(RawDesc)).data();
  std::memcpy(desc + offsetof(RawDesc, addr), &addr, sizeof(addr));
  std::memcpy(desc + offsetof(RawDesc, len), &len, sizeof(len));
  std::memcpy(desc + offsetof(RawDesc, flags), &flags, sizeof(flags));
  std::memcpy(desc + offsetof(RawDesc, next), &next, sizeof(next));
}

void FakeDriverQueue::WriteIndirectDescriptor(base::GuestAddress table, std::uint16_t index,
                                              base::GuestAddress addr, std::uint32_t len,
                                              std::uint16_t flags, std::uint16_t next) {
  Check(memory_->WriteObj(table + 16ull * index, RawDesc{addr, len, flags, next}));
}

std::uint16_t FakeDriverQueue::AddChain(std::span<const FakeBuffer> buffers) {
  absl::InlinedVector<std::uint16_t, 8> indices;
  for (std::size_t i = 0; i < buffers.size(); ++i) indices.push_back(TakeFree());
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    const bool last = i + 1 == buffers.size();
    std::uint16_t flags = static_cast<std::uint16_t>(
        (buffers[i].device_writable ? kDescFlagWrite : 0) | (last ? 0 : kDescFlagNext));
    const std::uint16_t next = last ? 0 : indices[i + 1];
    WriteDescriptor(indices[i], buffers[i].addr, buffers[i].len, flags, next);
    next_[indices[i]] = next;
  }
  const std::uint16_t head = indices.front();
  chain_length_[head] = static_cast<std::uint16_t>(indices.size());
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
  chain_length_[head] = 1;
  Publish(head);
  return head;
}

void FakeDriverQueue::Publish(std::uint16_t head) {
  const std::uint16_t slot = static_cast<std::uint16_t>(avail_idx_ & (layout_.size - 1));
  WriteU16(avail_offset_ + 4 + 2ull * slot, head);
  SetAvailIdx(static_cast<std::uint16_t>(avail_idx_ + 1));
}

void FakeDriverQueue::SetAvailIdx(std::uint16_t idx) {
  avail_idx_ = idx;
  WriteU16(avail_offset_ + 2, idx);
}

void FakeDriverQueue::SetAvailFlags(std::uint16_t flags) { WriteU16(avail_offset_, flags); }

void FakeDriverQueue::SetUsedEvent(std::uint16_t used_event) {
  WriteU16(avail_offset_ + 4 + 2ull * layout_.size, used_event);
}

std::uint16_t FakeDriverQueue::AvailIdx() const { return ReadU16(avail_offset_ + 2); }
std::uint16_t FakeDriverQueue::UsedIdx() const { return ReadU16(used_offset_ + 2); }
std::uint16_t FakeDriverQueue::UsedFlags() const { return ReadU16(used_offset_); }
std::uint16_t FakeDriverQueue::AvailEvent() const {
  return ReadU16(used_offset_ + 4 + 8ull * layout_.size);
}

std::optional<UsedElement> FakeDriverQueue::PopUsed() {
  if (UsedIdx() == last_used_) return std::nullopt;
  const std::uint16_t slot = static_cast<std::uint16_t>(last_used_ & (layout_.size - 1));
  UsedElement elem;
  // The acquire load of used idx orders this read after the device's write of the element.
  std::memcpy(&elem, area_.subspan(used_offset_ + 4 + 8ull * slot, sizeof(elem)).data(),
              sizeof(elem));
  ++last_used_;
  if (elem.id < chain_length_.size()) {
    auto index = static_cast<std::uint16_t>(elem.id);
    for (std::uint16_t n = chain_length_[elem.id]; n > 0; --n) {
      free_.push_back(index);
      index = next_[index];
    }
    chain_length_[elem.id] = 0;
  }
  return elem;
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
