#include "virtio/descriptor_chain.h"

#include <algorithm>
#include <cstring>

namespace ember::virtio {
namespace {

// Calls visit(piece) for each piece of `descs` covering [offset, offset+len) of their
// concatenation. False when the descriptors hold fewer than offset+len bytes.
template <typename Visit>
bool ForEachPiece(std::span<const Descriptor> descs, std::uint64_t offset, std::uint64_t len,
                  Visit visit) {
  for (const Descriptor& d : descs) {
    if (len == 0) break;
    if (offset >= d.len) {
      offset -= d.len;
      continue;
    }
    std::uint64_t take = std::min<std::uint64_t>(d.len - offset, len);
    visit(d.host.subspan(offset, take));
    len -= take;
    offset = 0;
  }
  return len == 0;
}

bool CollectIoVecs(std::span<const Descriptor> descs, std::uint64_t offset, std::uint64_t len,
                   IoVecs* out) {
  out->clear();
  return ForEachPiece(descs, offset, len, [out](std::span<std::uint8_t> piece) {
    // Filled in place rather than copied from a temporary (a store-forwarding stall).
    iovec& iov = out->emplace_back();
    iov.iov_base = piece.data();
    iov.iov_len = piece.size();
  });
}

}  // namespace

bool DescriptorChain::CopyFromReadable(std::uint64_t offset, std::span<std::uint8_t> out) const {
  std::size_t done = 0;
  return ForEachPiece(readable(), offset, out.size(), [&](std::span<std::uint8_t> piece) {
    std::memcpy(out.data() + done, piece.data(), piece.size());
    done += piece.size();
  });
}

bool DescriptorChain::CopyToWritable(std::uint64_t offset,
                                     std::span<const std::uint8_t> data) const {
  std::size_t done = 0;
  return ForEachPiece(writable(), offset, data.size(), [&](std::span<std::uint8_t> piece) {
    std::memcpy(piece.data(), data.data() + done, piece.size());
    done += piece.size();
  });
}

bool DescriptorChain::ReadableIoVecs(std::uint64_t offset, std::uint64_t len, IoVecs* out) const {
  return CollectIoVecs(readable(), offset, len, out);
}

bool DescriptorChain::WritableIoVecs(std::uint64_t offset, std::uint64_t len, IoVecs* out) const {
  return CollectIoVecs(writable(), offset, len, out);
}

std::uint8_t* DescriptorChain::WritableByte(std::uint64_t offset) const {
  std::uint8_t* byte = nullptr;
  bool ok = ForEachPiece(writable(), offset, 1,
                         [&](std::span<std::uint8_t> piece) { byte = piece.data(); });
  return ok ? byte : nullptr;
}

}  // namespace ember::virtio
