#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "vmm/base/guest_memory.h"
#include "vmm/kernel_image.h"

namespace ember::vmm {

struct GuestBoot {
  const KernelImage* kernel;  // borrowed
  std::string initrd_path;    // empty: none
  std::string cmdline;
};

// Puts everything the boot protocol needs into fresh guest memory — kernel, initrd, command
// line, zero page, GDT and page tables — and returns the kernel's 64-bit entry point. Bad
// images and sizes give InvalidArgument errors naming the file; memory is not touched before
// the kernel has been checked.
[[nodiscard]] absl::StatusOr<std::uint64_t> LoadGuest(const base::GuestMemory& memory,
                                                      const GuestBoot& boot);

}  // namespace ember::vmm
