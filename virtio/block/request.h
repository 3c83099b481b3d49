#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "virtio/descriptor_chain.h"

namespace ember::virtio::block {

inline constexpr std::uint64_t kSectorSize = 512;
inline constexpr std::uint32_t kIdBytes = 20;  // VIRTIO_BLK_ID_BYTES

// Request types (spec 5.2.6).
inline constexpr std::uint32_t kTypeIn = 0;
inline constexpr std::uint32_t kTypeOut = 1;
inline constexpr std::uint32_t kTypeFlush = 4;
inline constexpr std::uint32_t kTypeGetId = 8;
inline constexpr std::uint32_t kTypeDiscard = 11;
inline constexpr std::uint32_t kTypeWriteZeroes = 13;

// Status byte values.
inline constexpr std::uint8_t kStatusOk = 0;
inline constexpr std::uint8_t kStatusIoErr = 1;
inline constexpr std::uint8_t kStatusUnsupp = 2;

// One discard / write-zeroes segment (struct virtio_blk_discard_write_zeroes).
struct DiscardSegment {
  std::uint64_t sector;
  std::uint32_t num_sectors;
  std::uint32_t flags;
};
static_assert(sizeof(DiscardSegment) == 16);
inline constexpr std::uint32_t kWriteZeroesFlagUnmap = 1;

// A block request framed out of a descriptor chain: a 16-byte header at the start of the
// readable stream, the status byte at the end of the writable stream, and the data between
// (spec 5.2.6). Borrows the chain's guest memory.
struct Request {
  std::uint32_t type = 0;
  std::uint64_t sector = 0;
  // IN, GET_ID: the writable bytes before the status byte. OUT, DISCARD, WRITE_ZEROES: the
  // readable bytes after the header.
  std::uint64_t data_len = 0;
  std::uint8_t* status = nullptr;  // the status byte, in guest memory
};

// Frames `chain`. Fails (a malformed chain: no header or no status byte) only for requests
// that cannot even be answered; requests that can be answered with an error status parse.
[[nodiscard]] absl::StatusOr<Request> ParseRequest(const DescriptorChain& chain);

}  // namespace ember::virtio::block
