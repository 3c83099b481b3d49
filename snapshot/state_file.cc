#include "snapshot/state_file.h"

#include <cstring>

#include "snapshot/file_codec.h"
#include "snapshot/snapshot_id.h"
#include "vmm/base/atomic_file.h"
#include "vmm/base/status.h"

namespace ember::snapshot {
namespace {

constexpr std::size_t kHeaderSize = 8 + 4 + 4 + 8;
constexpr FormatHeader kFormat = {kMagic, "snapshot state file", kHeaderSize, kFormatVersion};

// The fixed header against the size of the whole file (see HeaderCheck).
absl::Status CheckStateHeader(const std::string& header, std::uint64_t file_size) {
  EMBER_RETURN_IF_ERROR(CheckHeaderStart(header, file_size, kFormat));
  // Zero now, so that a later format can give it a meaning old readers refuse.
  if (auto reserved = GetLittleEndian<std::uint32_t>(header, 12); reserved != 0) {
    return absl::InvalidArgumentError("the reserved header word is " + std::to_string(reserved) +
                                      ", not 0");
  }
  auto length = GetLittleEndian<std::uint64_t>(header, 16);
  if (length > kMaxPayload || file_size != kHeaderSize + length + kCrcSize) {
    return absl::InvalidArgumentError(
        "truncated or padded: the header announces " + std::to_string(length) +
        " payload bytes, the file holds " + std::to_string(file_size) + " bytes in all");
  }
  return absl::OkStatus();
}

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
  EMBER_RETURN_IF_ERROR(CheckStateHeader(bytes, bytes.size()));
  auto length = GetLittleEndian<std::uint64_t>(bytes, 16);
  std::size_t crc_offset = kHeaderSize + length;
  if (GetLittleEndian<std::uint64_t>(bytes, crc_offset) != Crc64(bytes, crc_offset)) {
    return absl::InvalidArgumentError("CRC mismatch: the file is corrupted");
  }
  v1::SnapshotState state;
  if (!state.ParseFromArray(bytes.data() + kHeaderSize, static_cast<int>(length))) {
    return absl::InvalidArgumentError("the state payload does not parse");
  }
  if (state.snapshot_id().size() != kSnapshotIdSize) {
    return absl::InvalidArgumentError("the snapshot id is " +
                                      std::to_string(state.snapshot_id().size()) + " bytes, not " +
                                      std::to_string(kSnapshotIdSize));
  }
  if (state.base_memory_ids_size() != state.base_memory_files_size()) {
    return absl::InvalidArgumentError(
        "it names " + std::to_string(state.base_memory_files_size()) + " base memory files and " +
        std::to_string(state.base_memory_ids_size()) + " ids for them");
  }
  for (const std::string& id : state.base_memory_ids()) {
    if (id.size() != kSnapshotIdSize) {
      return absl::InvalidArgumentError("a base memory file's id is " +
                                        std::to_string(id.size()) + " bytes, not " +
                                        std::to_string(kSnapshotIdSize));
    }
  }
  return state;
}

absl::Status WriteStateFile(const std::string& path, const v1::SnapshotState& state) {
  EMBER_ASSIGN_OR_RETURN(base::AtomicFile file, WriteStateFileUncommitted(path, state));
  return file.Commit();
}

absl::StatusOr<base::AtomicFile> WriteStateFileUncommitted(const std::string& path,
                                                           const v1::SnapshotState& state,
                                                           int dir_fd) {
  EMBER_ASSIGN_OR_RETURN(base::AtomicFile file, base::AtomicFile::Create(path, 0600, dir_fd));
  EMBER_RETURN_IF_ERROR(file.Append(EncodeState(state)));
  return file;
}

absl::StatusOr<v1::SnapshotState> ReadStateFile(const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(std::string bytes,
                         ReadCheckedFile(path, "snapshot state file", kHeaderSize, CheckStateHeader));
  auto state = DecodeState(bytes);
  if (!state.ok()) {
    return absl::InvalidArgumentError("snapshot state file " + path + ": " +
                                      std::string(state.status().message()));
  }
  return state;
}

}  // namespace ember::snapshot
