#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "virtio/descriptor_chain.h"
#include "vmm/base/guest_memory.h"

namespace ember::virtio {

// Where the driver placed one split virtqueue, as the transport collects it from the
// driver's register writes (spec 2.7). Plain data; guest-controlled until Queue::Create
// has checked it.
struct QueueLayout {
  std::uint16_t size = 0;
  base::GuestAddress desc_table = 0;
  base::GuestAddress avail_ring = 0;
  base::GuestAddress used_ring = 0;
};

// The device side of one split virtqueue, created by the transport when the driver sets
// DRIVER_OK and then owned by the device, which uses it only on the VMM loop thread (or
// under its own lock). Borrows the GuestMemory, which must outlive it.
//
// Every value read from guest memory is checked before use; a bad value makes Pop return an
// error whose message names the fault. The caller (the device) then marks itself as needing
// reset and counts the fault; nothing the guest writes can make the queue touch memory
// outside the guest or loop forever.
class Queue {
 public:
  // Checks `layout`: size a power of two in [1, max_size], rings aligned as the spec requires
  // and wholly inside guest memory. `features` are the negotiated features: they select
  // indirect descriptors (VIRTIO_F_INDIRECT_DESC) and EVENT_IDX suppression.
  [[nodiscard]] static absl::StatusOr<Queue> Create(const base::GuestMemory& memory,
                                                    const QueueLayout& layout,
                                                    std::uint16_t max_size,
                                                    std::uint64_t features);

  // Takes the next available chain, nullopt when the driver has published nothing new.
  // An error means the driver broke the ring; the queue must not be used again until reset.
  [[nodiscard]] absl::StatusOr<std::optional<DescriptorChain>> Pop();
  // The same into `chain`, whose previous contents are replaced: true when a chain was taken.
  // For data paths that reuse one DescriptorChain rather than build and move one per request.
  // On false or an error `chain` holds nothing to use.
  [[nodiscard]] absl::StatusOr<bool> Pop(DescriptorChain* chain);
  // Puts the chain Pop just returned back, so a throttled device can retry it later. Called n
  // times in a row it puts back the last n chains popped, newest first (vsock returns the RX
  // chains a short read did not fill), as long as none of them was completed with AddUsed.
  void UndoPop();

  // Returns chain `head` to the driver with `len` bytes written into its writable buffers.
  // `head` must come from a chain this queue popped (a broken invariant aborts).
  void AddUsed(std::uint16_t head, std::uint32_t len);

  // Whether the driver wants an interrupt for the used entries added since the last call:
  // EVENT_IDX's used_event when negotiated, otherwise VRING_AVAIL_F_NO_INTERRUPT.
  [[nodiscard]] bool NeedsInterrupt();

  // Asks the driver not to notify while the device is draining the queue. Without EVENT_IDX
  // this sets VRING_USED_F_NO_NOTIFY; with it, avail_event already does the job.
  void DisableNotification();
  // Asks for a notification on the next new buffer, then returns whether buffers arrived
  // meanwhile, in which case the device must keep draining (else a notification is lost).
  [[nodiscard]] bool EnableNotification();

  [[nodiscard]] std::uint16_t size() const { return layout_.size; }
  [[nodiscard]] const QueueLayout& layout() const { return layout_; }
  [[nodiscard]] bool event_idx() const { return event_idx_; }
  // Ring positions, for snapshots.
  [[nodiscard]] std::uint16_t next_avail() const { return next_avail_; }
  [[nodiscard]] std::uint16_t next_used() const { return next_used_; }
  void RestorePositions(std::uint16_t next_avail, std::uint16_t next_used);

 private:
  Queue(const base::GuestMemory& memory, const QueueLayout& layout, bool indirect,
        bool event_idx, std::uint8_t* desc, std::uint8_t* avail, std::uint8_t* used)
      : memory_(&memory),
        layout_(layout),
        indirect_(indirect),
        event_idx_(event_idx),
        desc_(desc),
        avail_(avail),
        used_(used) {}

  [[nodiscard]] absl::Status ParseChain(std::uint16_t head, DescriptorChain* chain) const;
  [[nodiscard]] std::uint16_t AvailIdx() const;

  const base::GuestMemory* memory_;
  QueueLayout layout_;
  bool indirect_;
  bool event_idx_;
  // Host addresses of the three ring areas, checked once by Create.
  std::uint8_t* desc_;
  std::uint8_t* avail_;
  std::uint8_t* used_;
  std::uint16_t next_avail_ = 0;
  std::uint16_t next_used_ = 0;
  // used idx when NeedsInterrupt last ran: the entries since then await an interrupt.
  std::uint16_t signalled_used_ = 0;
};

}  // namespace ember::virtio
