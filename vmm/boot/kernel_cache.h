#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "vmm/arch/x86_64/bzimage.h"
#include "vmm/boot/kernel_image.h"

namespace ember::vmm {

// Decompressed vmlinux images of bzImages, stored by the SHA-256 of the whole bzImage so
// that only the first boot of a kernel pays for decompression. Entries are written once,
// atomically and durably (base::WriteFileAtomically), and never modified; a reader never sees
// a partial file. An entry whose size is not the kernel's uncompressed size is a miss and is
// rewritten.
class KernelCache {
 public:
  // `dir` is created (mode 0700) on first store. Empty: no caching.
  explicit KernelCache(std::string dir) : dir_(std::move(dir)) {}

  // $EMBER_KERNEL_CACHE if set; else /var/cache/ember/kernels for root, or
  // $XDG_CACHE_HOME/ember/kernels (~/.cache/ember/kernels) for other users.
  [[nodiscard]] static std::string DefaultDir();

  // The vmlinux inside `bzimage` (whose parsed form is `parsed`): mapped from the cache when
  // present, otherwise decompressed and stored. A cache that cannot be written (read-only
  // file system, a jail) costs only the store: the kernel is still returned.
  [[nodiscard]] absl::StatusOr<KernelImage> Vmlinux(const KernelImage& bzimage,
                                                    const arch::BzImage& parsed) const;

  // Hex SHA-256 of `bytes`; the cache key.
  [[nodiscard]] static std::string ContentKey(std::span<const std::uint8_t> bytes);
  [[nodiscard]] std::string PathFor(const std::string& key) const;

 private:
  std::string dir_;
};

}  // namespace ember::vmm
