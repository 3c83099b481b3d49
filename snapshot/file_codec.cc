#include "snapshot/file_codec.h"

#include <fcntl.h>
#include <lzma.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::snapshot {

std::uint64_t Crc64(const std::string& bytes, std::size_t length) {
  // liblzma's CRC-64 (the XZ/ECMA-182 polynomial); liblzma is already linked for kernels. It
  // takes bytes as uint8_t.
  return lzma_crc64(reinterpret_cast<const std::uint8_t*>(bytes.data()), length, 0);
}

absl::Status CheckHeaderStart(const std::string& header, std::uint64_t file_size,
                              const FormatHeader& format) {
  if (header.size() < 8 || std::memcmp(header.data(), format.magic, 8) != 0) {
    return absl::InvalidArgumentError("not an Ember " + std::string(format.description) +
                                      " (wrong magic)");
  }
  if (header.size() < format.header_size || file_size < format.header_size + kCrcSize) {
    return absl::InvalidArgumentError("truncated: shorter than the header");
  }
  auto version = GetLittleEndian<std::uint32_t>(header, 8);
  if (version != format.version) {
    // An older version is one this Ember wrote before: say what to do about it.
    return absl::InvalidArgumentError(
        "format version " + std::to_string(version) + " is not supported (this Ember reads " +
        "version " + std::to_string(format.version) + ")" +
        (version < format.version ? "; it was written by an older Ember: take it again" : ""));
  }
  return absl::OkStatus();
}

namespace {

// Reads bytes [offset, offset + length) of the file into `out`.
absl::Status ReadAt(int fd, std::uint64_t offset, std::uint64_t length, std::string& out,
                    const std::string& what, const std::string& path) {
  std::size_t start = out.size();
  out.resize(start + length);
  for (std::uint64_t done = 0; done < length;) {
    ssize_t n = ::pread(fd, out.data() + start + done, length - done,
                        static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return base::ErrnoError("read " + what, path);
    if (n == 0) return absl::InvalidArgumentError(what + " " + path + " shrank while read");
    done += static_cast<std::uint64_t>(n);
  }
  return absl::OkStatus();
}

const char* FileKind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

absl::StatusOr<OpenedFile> OpenSnapshotFile(const std::string& path, const std::string& what,
                                            Symlinks symlinks) {
  // O_NONBLOCK: opening a FIFO waits for a writer, a terminal for its carrier. Regular files
  // ignore it.
  int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | (symlinks == Symlinks::kRefuse ? O_NOFOLLOW : 0);
  base::UniqueFd fd(::open(path.c_str(), flags));
  if (!fd && errno == ELOOP && symlinks == Symlinks::kRefuse) {
    return absl::InvalidArgumentError(what + " " + path +
                                      " is a symlink; a snapshot names the file itself");
  }
  struct stat st {};
  if (!fd || ::fstat(fd.Get(), &st) != 0) {
    return absl::InvalidArgumentError(
        std::string(base::ErrnoError("cannot open " + what, path).message()));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(what + " " + path + " is " + FileKind(st.st_mode) +
                                      ", not a regular file");
  }
  return OpenedFile{std::move(fd), static_cast<std::uint64_t>(st.st_size)};
}

absl::StatusOr<std::string> ReadCheckedFile(const std::string& path, const std::string& what,
                                            std::size_t header_size, const HeaderCheck& check) {
  EMBER_ASSIGN_OR_RETURN(OpenedFile file, OpenSnapshotFile(path, what));
  const base::UniqueFd& fd = file.fd;
  std::uint64_t file_size = file.size;
  std::string bytes;
  EMBER_RETURN_IF_ERROR(
      ReadAt(fd.Get(), 0, std::min<std::uint64_t>(header_size, file_size), bytes, what, path));
  if (absl::Status status = check(bytes, file_size); !status.ok()) {
    return absl::InvalidArgumentError(what + " " + path + ": " + std::string(status.message()));
  }
  // The check bounded the size: read exactly the rest.
  EMBER_RETURN_IF_ERROR(ReadAt(fd.Get(), bytes.size(), file_size - bytes.size(), bytes, what, path));
  return bytes;
}

}  // namespace ember::snapshot
