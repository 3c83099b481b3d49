#include "virtio/vsock/packet.h"

#include <cstring>

namespace ember::virtio::vsock {
namespace {

// Field offsets in the packed wire header.
constexpr std::size_t kSrcCid = 0;
constexpr std::size_t kDstCid = 8;
constexpr std::size_t kSrcPort = 16;
constexpr std::size_t kDstPort = 20;
constexpr std::size_t kLen = 24;
constexpr std::size_t kType = 28;
constexpr std::size_t kOp = 30;
constexpr std::size_t kFlags = 32;
constexpr std::size_t kBufAlloc = 36;
constexpr std::size_t kFwdCnt = 40;

// The host is little-endian like the wire format (checked in virtio/spec.h).
template <typename T>
void Put(std::span<std::uint8_t, kHeaderSize> out, std::size_t at, T value) {
  std::memcpy(out.data() + at, &value, sizeof(T));
}
template <typename T>
T Get(std::span<const std::uint8_t, kHeaderSize> in, std::size_t at) {
  T value;
  std::memcpy(&value, in.data() + at, sizeof(T));
  return value;
}

}  // namespace

std::array<std::uint8_t, kHeaderSize> Header::Encode() const {
  std::array<std::uint8_t, kHeaderSize> out{};
  EncodeTo(out);
  return out;
}

void Header::EncodeTo(std::span<std::uint8_t, kHeaderSize> out) const {
  Put(out, kSrcCid, src_cid);
  Put(out, kDstCid, dst_cid);
  Put(out, kSrcPort, src_port);
  Put(out, kDstPort, dst_port);
  Put(out, kLen, len);
  Put(out, kType, type);
  Put(out, kOp, op);
  Put(out, kFlags, flags);
  Put(out, kBufAlloc, buf_alloc);
  Put(out, kFwdCnt, fwd_cnt);
}

Header Header::Decode(std::span<const std::uint8_t, kHeaderSize> in) {
  Header h;
  h.src_cid = Get<std::uint64_t>(in, kSrcCid);
  h.dst_cid = Get<std::uint64_t>(in, kDstCid);
  h.src_port = Get<std::uint32_t>(in, kSrcPort);
  h.dst_port = Get<std::uint32_t>(in, kDstPort);
  h.len = Get<std::uint32_t>(in, kLen);
  h.type = Get<std::uint16_t>(in, kType);
  h.op = Get<std::uint16_t>(in, kOp);
  h.flags = Get<std::uint32_t>(in, kFlags);
  h.buf_alloc = Get<std::uint32_t>(in, kBufAlloc);
  h.fwd_cnt = Get<std::uint32_t>(in, kFwdCnt);
  return h;
}

}  // namespace ember::virtio::vsock
