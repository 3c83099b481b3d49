#include "vmm/boot/kernel_image.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

// The test guest's ELF image, linked in by builtin_guest.S.
extern "C" const std::uint8_t ember_builtin_guest_start[];
extern "C" const std::uint8_t ember_builtin_guest_end[];

namespace ember::vmm {

absl::StatusOr<base::MmapRegion> MapFileReadOnly(const std::string& path) {
  // O_NONBLOCK: a FIFO in a file's place must not block the open (it is refused below);
  // reads go through the mapping, which the flag does not touch.
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fd) return base::ErrnoError("open", "\"" + path + "\"");
  struct stat st {};
  if (::fstat(fd.Get(), &st) != 0) return base::ErrnoError("fstat", "\"" + path + "\"");
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError("\"" + path + "\" is not a regular file");
  }
  if (st.st_size == 0) return absl::InvalidArgumentError("\"" + path + "\" is empty");
  return base::MmapRegion::Map(static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE,
                               fd.Get());
}

absl::StatusOr<KernelImage> KernelImage::FromFile(const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(base::MmapRegion mapping, MapFileReadOnly(path));
  std::span<const std::uint8_t> bytes(mapping.data(), mapping.size());
  return KernelImage(path, std::move(mapping), bytes);
}

KernelImage KernelImage::FromBytes(std::string name, std::vector<std::uint8_t> bytes) {
  KernelImage image(std::move(name), base::MmapRegion(), {});
  image.owned_ = std::move(bytes);
  image.bytes_ = image.owned_;  // a vector's buffer does not move when the vector is moved
  return image;
}

KernelImage KernelImage::Builtin() {
  return KernelImage("built-in test guest", base::MmapRegion(),
                     std::span<const std::uint8_t>(ember_builtin_guest_start,
                                                   ember_builtin_guest_end));
}

}  // namespace ember::vmm
