#include "snapshot/file_codec.h"

#include <fcntl.h>
#include <lzma.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::snapshot {

std::uint64_t Crc64(const std::string& bytes, std::size_t length) {
  // liblzma's CRC-64 (the XZ/ECMA-182 polynomial); liblzma is already linked for kernels. It
  // takes bytes as uint8_t.
  return lzma_crc64(reinterpret_cast<const std::uint8_t*>(bytes.data()), length, 0);
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes) {
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

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        std::string(base::ErrnoError("cannot open " + what, path).message()));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace ember::snapshot
