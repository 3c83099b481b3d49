#include "snapshot/state_file.h"

#include <cstring>

#include "snapshot/file_codec.h"
#include "vmm/base/atomic_file.h"
#include "vmm/base/status.h"

namespace ember::snapshot {
namespace {

constexpr std::size_t kHeaderSize = 8 + 4 + 4 + 8;
constexpr std::size_t kCrcSize = 8;

}  // namespace

std::string EncodeState(const v1::SnapshotState& state) {
  std::string payload = state.SerializeAsString();
  std::string out(kMagic, sizeof(kMagic));
  PutLittleEndian<std::uint32_t>(out, kFormatVersion);
  PutLittleEndian<std::uint32_t>(out, 0);
  PutLittleEndian<std::uint64_t>(out, payload.size());
  out += payload;
  PutLittleEndian<std::uint64_t>(out, Crc64(out, out.size()));
  return out;
}

absl::StatusOr<v1::SnapshotState> DecodeState(const std::string& bytes) {
  if (bytes.size() < sizeof(kMagic) || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::InvalidArgumentError("not an Ember snapshot state file (wrong magic)");
  }
  if (bytes.size() < kHeaderSize + kCrcSize) {
    return absl::InvalidArgumentError("truncated: shorter than the header");
  }
  auto version = GetLittleEndian<std::uint32_t>(bytes, 8);
  if (version != kFormatVersion) {
    return absl::InvalidArgumentError("format version " + std::to_string(version) +
                                      " is not supported (this Ember reads version " +
                                      std::to_string(kFormatVersion) + ")");
  }
  auto length = GetLittleEndian<std::uint64_t>(bytes, 16);
  if (length > kMaxPayload || bytes.size() != kHeaderSize + length + kCrcSize) {
    return absl::InvalidArgumentError(
        "truncated or padded: the header announces " + std::to_string(length) +
        " payload bytes, the file holds " + std::to_string(bytes.size()) + " bytes in all");
  }
  std::size_t crc_offset = kHeaderSize + length;
  if (GetLittleEndian<std::uint64_t>(bytes, crc_offset) != Crc64(bytes, crc_offset)) {
    return absl::InvalidArgumentError("CRC mismatch: the file is corrupted");
  }
  v1::SnapshotState state;
  if (!state.ParseFromArray(bytes.data() + kHeaderSize, static_cast<int>(length))) {
    return absl::InvalidArgumentError("the state payload does not parse");
  }
  return state;
}

absl::Status WriteStateFile(const std::string& path, const v1::SnapshotState& state) {
  return base::WriteFileAtomically(path, EncodeState(state));
}

absl::StatusOr<v1::SnapshotState> ReadStateFile(const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(path, "snapshot state file"));
  auto state = DecodeState(bytes);
  if (!state.ok()) {
    return absl::InvalidArgumentError("snapshot state file " + path + ": " +
                                      std::string(state.status().message()));
  }
  return state;
}

}  // namespace ember::snapshot
