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
  // The header is copied once; the guest may rewrite its buffer while we work.
  if (!chain.CopyFromReadable(
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
  request.status = chain.WritableByte(chain.writable_bytes - 1);
  if (header.type == kTypeIn || header.type == kTypeGetId) {
    request.data_len = chain.writable_bytes - 1;
  } else {
    request.data_len = chain.readable_bytes - sizeof(Header);
  }
  return request;
}

}  // namespace ember::virtio::block
