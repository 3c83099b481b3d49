#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "vmm/base/guest_memory.h"
#include "vmm/boot/kernel_cache.h"
#include "vmm/boot/kernel_image.h"

namespace ember::vmm {

struct GuestBoot {
  const KernelImage* kernel = nullptr;  // borrowed: an ELF vmlinux or a bzImage
  std::string initrd_path;              // empty: none
  std::string cmdline;
  // For a bzImage: decompress the payload on the host and boot the vmlinux inside (the
  // fast path), when its format is supported; otherwise the guest decompresses itself.
  bool decompress_on_host = true;
  const KernelCache* cache = nullptr;   // borrowed; may be null (no caching)
};

// How the kernel was booted, for logs and tests.
enum class BootPath { kElf, kBzImageDecompressedOnHost, kBzImageSelfDecompressing };
[[nodiscard]] const char* BootPathName(BootPath path);

struct LoadedGuest {
  std::uint64_t entry;  // guest-physical 64-bit entry point
  BootPath path;
};

// Puts everything the boot protocol needs into fresh guest memory — kernel, initrd, command
// line, zero page, GDT and page tables. The format is detected from the file's content.
// Bad images and sizes give InvalidArgument errors naming the file.
[[nodiscard]] absl::StatusOr<LoadedGuest> LoadGuest(const base::GuestMemory& memory,
                                                    const GuestBoot& boot);

}  // namespace ember::vmm
