#pragma once

#include <array>
#include <cstdint>
#include <span>

namespace ember::virtio::vsock {

// Well-known CIDs (spec 5.10.4): the host is 2; guests get 3 and up.
inline constexpr std::uint64_t kHostCid = 2;
inline constexpr std::uint64_t kMinGuestCid = 3;

inline constexpr std::size_t kRxQueue = 0;
inline constexpr std::size_t kTxQueue = 1;
inline constexpr std::size_t kEventQueue = 2;

// struct virtio_vsock_hdr (spec 5.10.6), little-endian and packed: 44 bytes.
inline constexpr std::size_t kHeaderSize = 44;

inline constexpr std::uint16_t kTypeStream = 1;

enum class Op : std::uint16_t {
  kInvalid = 0,
  kRequest = 1,
  kResponse = 2,
  kRst = 3,
  kShutdown = 4,
  kRw = 5,
  kCreditUpdate = 6,
  kCreditRequest = 7,
};

// SHUTDOWN flags: the sender will receive no more (RCV) / send no more (SEND).
inline constexpr std::uint32_t kShutdownRcv = 1;
inline constexpr std::uint32_t kShutdownSend = 2;

// struct virtio_vsock_event's id for a transport reset (spec 5.10.6.7).
inline constexpr std::uint32_t kEventTransportReset = 0;

// The largest payload in one packet either way (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
inline constexpr std::uint32_t kMaxPayload = 64 * 1024;

// A decoded virtio_vsock_hdr. Plain data; Encode/Decode do the wire layout so the struct
// itself needs no packing.
struct Header {
  std::uint64_t src_cid = 0;
  std::uint64_t dst_cid = 0;
  std::uint32_t src_port = 0;
  std::uint32_t dst_port = 0;
  std::uint32_t len = 0;
  std::uint16_t type = 0;
  std::uint16_t op = 0;
  std::uint32_t flags = 0;
  std::uint32_t buf_alloc = 0;
  std::uint32_t fwd_cnt = 0;

  [[nodiscard]] std::array<std::uint8_t, kHeaderSize> Encode() const;
  // Encode into `out`, e.g. straight into a guest buffer.
  void EncodeTo(std::span<std::uint8_t, kHeaderSize> out) const;
  [[nodiscard]] static Header Decode(std::span<const std::uint8_t, kHeaderSize> bytes);
};

}  // namespace ember::virtio::vsock
