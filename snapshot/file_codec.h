#pragma once

// What Ember's small snapshot-side file formats (state file, working-set file, memory-file
// trailer) share: little-endian fields, a CRC-64 and header-first reads (writes go through
// base::WriteFileAtomically), and how every snapshot file is opened. Internal to snapshot/
// but for OpenSnapshotFile and Symlinks.
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

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

// What the formats' headers begin with: an 8-byte magic, then a u32 format version.
struct FormatHeader {
  const char* magic;        // 8 bytes
  const char* description;  // "snapshot state file": for "not an Ember <description>"
  std::size_t header_size;  // the fixed header, up to the variable part
  std::uint32_t version;    // the one this Ember reads
};
// Every file ends in a CRC-64 of all before it.
inline constexpr std::size_t kCrcSize = 8;

// The checks every format starts with, in this order: the magic, room for the fixed header and
// the CRC, the version. InvalidArgument saying which failed.
[[nodiscard]] absl::Status CheckHeaderStart(const std::string& header, std::uint64_t file_size,
                                            const FormatHeader& format);

// A snapshot file opened for reading, and its size when opened.
struct OpenedFile {
  base::UniqueFd fd;
  std::uint64_t size = 0;
};

// Whether a path may end in a symlink: the restorer's own command line may name one; a path
// a state file names (a diff's base memory files) is untrusted and may not.
enum class Symlinks { kFollow, kRefuse };

// Opens the file at `path` for reading, and only a regular file: non-blocking, so a FIFO or a
// device node named by mistake or malice is refused at once instead of waiting for a writer
// (with SIGTERM blocked, for ever). InvalidArgument "cannot open <what> <path>: <errno>" or
// "<what> <path> is not a regular file (a FIFO)"; never reads a byte.
[[nodiscard]] absl::StatusOr<OpenedFile> OpenSnapshotFile(const std::string& path,
                                                          const std::string& what,
                                                          Symlinks symlinks = Symlinks::kFollow);

// Checks a format's fixed header — `header` is the file's first bytes, as many of
// `header_size` as it holds — against the file's size: OK only when the header is the format's
// and announces a bounded length that is exactly `file_size`. Its messages do not name the file.
using HeaderCheck =
    std::function<absl::Status(const std::string& header, std::uint64_t file_size)>;

// The whole file at `path`, read only once `check` has accepted its header and its size (from
// fstat), so a foreign or huge file (a memory file passed as a state file) is refused
// without being read. Opened as OpenSnapshotFile opens it, with its messages;
// "<what> <path>: <check's message>" when the check refuses it.
[[nodiscard]] absl::StatusOr<std::string> ReadCheckedFile(const std::string& path,
                                                          const std::string& what,
                                                          std::size_t header_size,
                                                          const HeaderCheck& check);

}  // namespace ember::snapshot
