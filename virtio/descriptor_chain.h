#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>

#include "absl/container/inlined_vector.h"
#include "vmm/base/guest_memory.h"

namespace ember::virtio {

// One guest buffer of a chain. `host` is the buffer's bytes inside the guest-memory mapping,
// already bounds-checked by Queue::Pop; it stays valid as long as the GuestMemory does.
struct Descriptor {
  base::GuestAddress addr = 0;
  std::uint32_t len = 0;
  bool device_writable = false;
  std::span<std::uint8_t> host;
};

// iovecs pointing into guest memory, ready for preadv/pwritev/io_uring.
using IoVecs = absl::InlinedVector<iovec, 8>;

// A descriptor chain that Queue::Pop has fully parsed and validated: every buffer lies inside
// guest memory and all device-readable buffers precede all device-writable ones (spec 2.7.4.2).
// Devices see the chain as two byte streams, the readable one and the writable one, so they
// never depend on how the driver split a request into descriptors (VIRTIO_F_ANY_LAYOUT is
// implied by VIRTIO_F_VERSION_1). Owned by the device that popped it until it returns `head`
// through Queue::AddUsed.
struct DescriptorChain {
  std::uint16_t head = 0;
  absl::InlinedVector<Descriptor, 8> descriptors;
  std::size_t readable_count = 0;  // descriptors[0, readable_count) are device-readable
  std::uint64_t readable_bytes = 0;
  std::uint64_t writable_bytes = 0;

  [[nodiscard]] std::span<const Descriptor> readable() const {
    return std::span(descriptors).first(readable_count);
  }
  [[nodiscard]] std::span<const Descriptor> writable() const {
    return std::span(descriptors).subspan(readable_count);
  }

  // Copies `out.size()` bytes starting `offset` bytes into the readable stream. False when
  // the stream is shorter than that.
  [[nodiscard]] bool CopyFromReadable(std::uint64_t offset, std::span<std::uint8_t> out) const;
  // Copies `data` into the writable stream at `offset`. False when the stream is too short.
  [[nodiscard]] bool CopyToWritable(std::uint64_t offset,
                                    std::span<const std::uint8_t> data) const;
  // The iovecs covering [offset, offset+len) of the readable / writable stream, or false
  // when the stream is shorter.
  [[nodiscard]] bool ReadableIoVecs(std::uint64_t offset, std::uint64_t len, IoVecs* out) const;
  [[nodiscard]] bool WritableIoVecs(std::uint64_t offset, std::uint64_t len, IoVecs* out) const;
  // The host address of the writable stream's byte at `offset`, or nullptr when out of range.
  [[nodiscard]] std::uint8_t* WritableByte(std::uint64_t offset) const;
};

}  // namespace ember::virtio
