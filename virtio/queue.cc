#include "virtio/queue.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_format.h"
#include "virtio/spec.h"
#include "vmm/base/status.h"
#include "vmm/base/logging.h"

namespace ember::virtio {
namespace {

// struct virtq_desc (spec 2.7.5), copied out of guest memory once and then only the copy is
// used, so the guest cannot change a value between its check and its use.
struct RawDescriptor {
  std::uint64_t addr;
  std::uint32_t len;
  std::uint16_t flags;
  std::uint16_t next;
};
static_assert(sizeof(RawDescriptor) == 16);

constexpr std::uint64_t kDescAlign = 16;
constexpr std::uint64_t kAvailAlign = 2;
constexpr std::uint64_t kUsedAlign = 4;
constexpr std::uint64_t kUsedElemSize = 8;

// Ring indices and event fields are naturally aligned u16s that the guest reads and writes
// concurrently; atomic_ref gives the accesses the ordering the spec's barriers require.
std::uint16_t LoadAcquire16(std::uint8_t* p) {
  // The ring areas were checked to be aligned for their u16 fields.
  return std::atomic_ref<std::uint16_t>(*reinterpret_cast<std::uint16_t*>(p))
      .load(std::memory_order_acquire);
}

void StoreRelease16(std::uint8_t* p, std::uint16_t value) {
  // Aligned as above.
  std::atomic_ref<std::uint16_t>(*reinterpret_cast<std::uint16_t*>(p))
      .store(value, std::memory_order_release);
}

absl::Status ChainError(std::uint16_t head, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrFormat("virtqueue chain at head %u: %s", head, what));
}

}  // namespace

absl::StatusOr<Queue> Queue::Create(const base::GuestMemory& memory, const QueueLayout& layout,
                                    std::uint16_t max_size, std::uint64_t features) {
  const std::uint64_t size = layout.size;
  if (size == 0 || size > max_size || (size & (size - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "virtqueue size %u is not a power of two in [1, %u]", size, max_size));
  }
  struct Area {
    const char* name;
    base::GuestAddress addr;
    std::uint64_t len;
    std::uint64_t align;
  };
  const Area areas[] = {
      {"descriptor table", layout.desc_table, 16 * size, kDescAlign},
      {"available ring", layout.avail_ring, 6 + 2 * size, kAvailAlign},
      {"used ring", layout.used_ring, 6 + kUsedElemSize * size, kUsedAlign},
  };
  std::uint8_t* hosts[3] = {};
  for (int i = 0; i < 3; ++i) {
    const Area& a = areas[i];
    if (a.addr % a.align != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "virtqueue %s at 0x%x is not %u-byte aligned", a.name, a.addr, a.align));
    }
    auto slice = memory.Slice(a.addr, a.len);
    if (!slice.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "virtqueue %s 0x%x+0x%x is outside guest memory", a.name, a.addr, a.len));
    }
    hosts[i] = slice->data();
  }
  return Queue(memory, layout, (features & FeatureBit(kFeatureIndirectDesc)) != 0,
               (features & FeatureBit(kFeatureEventIdx)) != 0, hosts[0], hosts[1], hosts[2]);
}

std::uint16_t Queue::AvailIdx() const { return LoadAcquire16(avail_ + 2); }

absl::StatusOr<std::optional<DescriptorChain>> Queue::Pop() {
  DescriptorChain chain;
  EMBER_ASSIGN_OR_RETURN(bool popped, Pop(&chain));
  if (!popped) return std::nullopt;
  return chain;
}

absl::StatusOr<bool> Queue::Pop(DescriptorChain* chain) {
  const std::uint16_t avail_idx = AvailIdx();
  const std::uint16_t pending = static_cast<std::uint16_t>(avail_idx - next_avail_);
  if (pending == 0) return false;
  if (pending > layout_.size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "virtqueue available index %u is %u ahead of the device, more than the queue size %u",
        avail_idx, pending, layout_.size));
  }
  // The acquire load of avail idx orders this read of the ring entry after it.
  std::uint16_t head;
  std::memcpy(&head, avail_ + 4 + 2 * (next_avail_ & (layout_.size - 1)), sizeof(head));
  if (head >= layout_.size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "virtqueue available ring names head %u, beyond the queue size %u", head,
        layout_.size));
  }
  EMBER_RETURN_IF_ERROR(ParseChain(head, chain));
  ++next_avail_;
  return true;
}

absl::Status Queue::ParseChain(std::uint16_t head, DescriptorChain* chain) const {
  chain->head = head;
  chain->descriptors.clear();
  chain->readable_count = 0;
  chain->readable_bytes = 0;
  chain->writable_bytes = 0;
  const std::uint8_t* table = desc_;
  std::uint32_t table_entries = layout_.size;
  bool in_indirect = false;
  bool seen_writable = false;
  // Steps taken in the current table: a loop-free walk visits each entry at most once, so
  // more steps than entries means the `next` fields loop.
  std::uint32_t steps = 0;
  std::uint16_t index = head;
  for (;;) {
    if (index >= table_entries) {
      return ChainError(head, absl::StrFormat("next index %u is beyond the %s table of %u",
                                              index, in_indirect ? "indirect" : "descriptor",
                                              table_entries));
    }
    if (++steps > table_entries) {
      return ChainError(head, "descriptor chain loops");
    }
    RawDescriptor d;
    std::memcpy(&d, table + sizeof(RawDescriptor) * index, sizeof(d));

    if ((d.flags & kDescFlagIndirect) != 0) {
      if (!indirect_) return ChainError(head, "indirect descriptor without VIRTIO_F_INDIRECT_DESC");
      if (in_indirect) return ChainError(head, "indirect table inside an indirect table");
      if ((d.flags & kDescFlagNext) != 0) {
        return ChainError(head, "indirect descriptor also has VIRTQ_DESC_F_NEXT");
      }
      if (d.len == 0 || d.len % sizeof(RawDescriptor) != 0 ||
          d.len / sizeof(RawDescriptor) > kMaxQueueSize) {
        return ChainError(head, absl::StrFormat("indirect table length %u is invalid", d.len));
      }
      auto slice = memory_->Slice(d.addr, d.len);
      if (!slice.ok()) {
        return ChainError(head, absl::StrFormat("indirect table 0x%x+0x%x is outside guest memory",
                                                d.addr, d.len));
      }
      table = slice->data();
      table_entries = static_cast<std::uint32_t>(d.len / sizeof(RawDescriptor));
      in_indirect = true;
      steps = 0;
      index = 0;
      continue;
    }

    const bool writable = (d.flags & kDescFlagWrite) != 0;
    if (!writable && seen_writable) {
      return ChainError(head, "device-readable descriptor after a device-writable one");
    }
    // A chain longer than the queue is forbidden to drivers (spec 2.7.5.3.1), also through an
    // indirect table; this bounds what one request can make the device do.
    if (chain->descriptors.size() >= layout_.size) {
      return ChainError(head, absl::StrFormat("chain is longer than the queue size %u",
                                              layout_.size));
    }
    std::uint8_t* host = memory_->HostAddress(d.addr, d.len);
    if (host == nullptr) {
      return ChainError(head, absl::StrFormat("buffer 0x%x+0x%x is outside guest memory",
                                              d.addr, d.len));
    }
    // Filled in place: building a temporary and copying it costs a store-forwarding stall
    // per descriptor, measurable at a million requests a second.
    Descriptor& added = chain->descriptors.emplace_back();
    added.addr = d.addr;
    added.len = d.len;
    added.device_writable = writable;
    added.host = std::span(host, d.len);
    if (writable) {
      seen_writable = true;
      chain->writable_bytes += d.len;
    } else {
      ++chain->readable_count;
      chain->readable_bytes += d.len;
    }
    if ((d.flags & kDescFlagNext) == 0) return absl::OkStatus();
    index = d.next;
  }
}

void Queue::UndoPop() { --next_avail_; }

void Queue::AddUsed(std::uint16_t head, std::uint32_t len) {
  if (head >= layout_.size) {
    EMBER_LOG(kError) << "device returned head " << head << " to a queue of size "
                      << layout_.size;
    std::abort();
  }
  // struct virtq_used_elem, field by field straight into the ring: copying in a struct built
  // just before stalls on store forwarding, once per request.
  std::uint8_t* elem = used_ + 4 + kUsedElemSize * (next_used_ & (layout_.size - 1));
  const std::uint32_t id = head;
  std::memcpy(elem, &id, sizeof(id));
  std::memcpy(elem + sizeof(id), &len, sizeof(len));
  ++next_used_;
  // Release: the element (and the data the device wrote) is visible before the index.
  StoreRelease16(used_ + 2, next_used_);
}

bool Queue::NeedsInterrupt() {
  // The used idx store must be visible before the driver's suppression field is read, or
  // both sides can decide the other will act (spec 2.7.7.2).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const std::uint16_t old_used = signalled_used_;
  const std::uint16_t new_used = next_used_;
  signalled_used_ = new_used;
  if (old_used == new_used) return false;
  if (!event_idx_) return (LoadAcquire16(avail_) & kAvailFlagNoInterrupt) == 0;
  const std::uint16_t used_event = LoadAcquire16(avail_ + 4 + 2 * layout_.size);
  // vring_need_event: interrupt when used_event lies in (old_used, new_used].
  return static_cast<std::uint16_t>(new_used - used_event - 1) <
         static_cast<std::uint16_t>(new_used - old_used);
}

void Queue::DisableNotification() {
  if (!event_idx_) StoreRelease16(used_, kUsedFlagNoNotify);
}

bool Queue::EnableNotification() {
  if (event_idx_) {
    StoreRelease16(used_ + 4 + kUsedElemSize * layout_.size, next_avail_);
  } else {
    StoreRelease16(used_, 0);
  }
  // The enable must be visible before avail idx is re-read (spec 2.7.10).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return AvailIdx() != next_avail_;
}

void Queue::RestorePositions(std::uint16_t next_avail, std::uint16_t next_used) {
  next_avail_ = next_avail;
  next_used_ = next_used;
  signalled_used_ = next_used;
}

}  // namespace ember::virtio
