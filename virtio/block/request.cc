#include "virtio/block/request.h"

#include <array>
#include <cstring>

#include "absl/strings/str_format.h"

namespace ember::virtio::block {
namespace {

struct Header {
  std::uint32_t type;
  std::uint32_t reserved;
  std::uint64_t sector;
};
static_assert(sizeof(Header) == 16);

}  // namespace

absl::StatusOr<Request> ParseRequest(const DescriptorChain& chain) {
  Header header;
  // The header is copied once; the guest may rewrite its buffer while we work. Drivers put
  // it in a descriptor of its own, which is copied directly; other layouts take the
  // general path.
  const std::span<const Descriptor> readable = chain.readable();
  if (!readable.empty() && readable[0].len >= sizeof(header)) {
    std::memcpy(&header, readable[0].host.data(), sizeof(header));
  } else if (!chain.CopyFromReadable(
                 0, std::span(reinterpret_cast<std::uint8_t*>(&header), sizeof(header)))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "block request at head %u has %u readable bytes, too few for its header", chain.head,
        chain.readable_bytes));
  }
  if (chain.writable_bytes == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("block request at head %u has no writable status byte", chain.head));
  }
  Request request;
  request.type = header.type;
  request.sector = header.sector;
  // The status byte ends the writable stream: the last byte of the last descriptor, unless
  // that descriptor is empty.
  const Descriptor& last = chain.descriptors.back();
  request.status = last.device_writable && last.len > 0
                       ? last.host.data() + (last.len - 1)
                       : chain.WritableByte(chain.writable_bytes - 1);
  if (header.type == kTypeIn || header.type == kTypeGetId) {
    request.data_len = chain.writable_bytes - 1;
  } else {
    request.data_len = chain.readable_bytes - sizeof(Header);
  }
  return request;
}

}  // namespace ember::virtio::block
