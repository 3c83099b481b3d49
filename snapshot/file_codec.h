#pragma once

// What Ember's small snapshot-side file formats (state file, working-set file) share:
// little-endian fields, a CRC-64 trailer and whole-file reads (writes go through
// base::WriteFileAtomically). Internal to
// snapshot/.
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/statusor.h"

namespace ember::snapshot {

template <typename T>
void PutLittleEndian(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // x86-64 is little-endian, as the formats are
  out.append(bytes, sizeof(T));
}

// The caller has checked that `in` holds sizeof(T) bytes at `offset`.
template <typename T>
T GetLittleEndian(const std::string& in, std::size_t offset) {
  T value;
  std::memcpy(&value, in.data() + offset, sizeof(T));
  return value;
}

// CRC-64/XZ (ECMA-182) of the first `length` bytes.
[[nodiscard]] std::uint64_t Crc64(const std::string& bytes, std::size_t length);

// The whole file; InvalidArgument "cannot open <what> <path>: <errno>" when it cannot be read.
[[nodiscard]] absl::StatusOr<std::string> ReadWholeFile(const std::string& path,
                                                        const std::string& what);

}  // namespace ember::snapshot
