#include "snapshot/state_file.h"

#include <fcntl.h>
#include <lzma.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::snapshot {
namespace {

constexpr std::size_t kHeaderSize = 8 + 4 + 4 + 8;
constexpr std::size_t kCrcSize = 8;

template <typename T>
void Put(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // x86-64 is little-endian, as the format is
  out.append(bytes, sizeof(T));
}

template <typename T>
T Get(const std::string& in, std::size_t offset) {
  T value;
  std::memcpy(&value, in.data() + offset, sizeof(T));
  return value;
}

std::uint64_t Crc64(const std::string& bytes, std::size_t length) {
  // liblzma's CRC-64 (the XZ/ECMA-182 polynomial); liblzma is already linked for kernels.
  return lzma_crc64(reinterpret_cast<const std::uint8_t*>(bytes.data()), length, 0);
}

}  // namespace

std::string EncodeState(const v1::SnapshotState& state) {
  std::string payload = state.SerializeAsString();
  std::string out(kMagic, sizeof(kMagic));
  Put<std::uint32_t>(out, kFormatVersion);
  Put<std::uint32_t>(out, 0);
  Put<std::uint64_t>(out, payload.size());
  out += payload;
  Put<std::uint64_t>(out, Crc64(out, out.size()));
  return out;
}

absl::StatusOr<v1::SnapshotState> DecodeState(const std::string& bytes) {
  if (bytes.size() < sizeof(kMagic) || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::InvalidArgumentError("not an Ember snapshot state file (wrong magic)");
  }
  if (bytes.size() < kHeaderSize + kCrcSize) {
    return absl::InvalidArgumentError("truncated: shorter than the header");
  }
  auto version = Get<std::uint32_t>(bytes, 8);
  if (version != kFormatVersion) {
    return absl::InvalidArgumentError("format version " + std::to_string(version) +
                                      " is not supported (this Ember reads version " +
                                      std::to_string(kFormatVersion) + ")");
  }
  auto length = Get<std::uint64_t>(bytes, 16);
  if (length > kMaxPayload || bytes.size() != kHeaderSize + length + kCrcSize) {
    return absl::InvalidArgumentError(
        "truncated or padded: the header announces " + std::to_string(length) +
        " payload bytes, the file holds " + std::to_string(bytes.size()) + " bytes in all");
  }
  std::size_t crc_offset = kHeaderSize + length;
  if (Get<std::uint64_t>(bytes, crc_offset) != Crc64(bytes, crc_offset)) {
    return absl::InvalidArgumentError("CRC mismatch: the file is corrupted");
  }
  v1::SnapshotState state;
  if (!state.ParseFromArray(bytes.data() + kHeaderSize, static_cast<int>(length))) {
    return absl::InvalidArgumentError("the state payload does not parse");
  }
  return state;
}

absl::Status WriteStateFile(const std::string& path, const v1::SnapshotState& state) {
  std::string bytes = EncodeState(state);
  std::string tmp = path + ".tmp";
  base::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return base::ErrnoError("open", tmp);
  if (::write(fd.Get(), bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
    return base::ErrnoError("write", tmp);
  }
  if (::fsync(fd.Get()) != 0) return base::ErrnoError("fsync", tmp);
  fd.Reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) return base::ErrnoError("rename", path);
  return absl::OkStatus();
}

absl::StatusOr<v1::SnapshotState> ReadStateFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        std::string(base::ErrnoError("cannot open snapshot state file", path).message()));
  }
  std::ostringstream text;
  text << in.rdbuf();
  auto state = DecodeState(text.str());
  if (!state.ok()) {
    return absl::InvalidArgumentError("snapshot state file " + path + ": " +
                                      std::string(state.status().message()));
  }
  return state;
}

}  // namespace ember::snapshot
