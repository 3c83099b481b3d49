#include "snapshot/file_codec.h"

#include <lzma.h>

#include <fstream>
#include <sstream>

#include "vmm/base/status.h"

namespace ember::snapshot {

std::uint64_t Crc64(const std::string& bytes, std::size_t length) {
  // liblzma's CRC-64 (the XZ/ECMA-182 polynomial); liblzma is already linked for kernels. It
  // takes bytes as uint8_t.
  return lzma_crc64(reinterpret_cast<const std::uint8_t*>(bytes.data()), length, 0);
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
