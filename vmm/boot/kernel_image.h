#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/base/mmap_region.h"

namespace ember::vmm {

// The bytes of a guest kernel: a file mapped read-only, bytes in memory, or the test guest
// built into ember-vmm. Owned by the builder until the kernel is copied into guest memory.
class KernelImage {
 public:
  [[nodiscard]] static absl::StatusOr<KernelImage> FromFile(const std::string& path);
  [[nodiscard]] static KernelImage Builtin();
  // A kernel produced in memory (a payload decompressed without a cache).
  [[nodiscard]] static KernelImage FromBytes(std::string name, std::vector<std::uint8_t> bytes);

  [[nodiscard]] std::span<const std::uint8_t> bytes() const { return bytes_; }
  // For messages: the file's path, or "built-in test guest".
  [[nodiscard]] const std::string& name() const { return name_; }

 private:
  KernelImage(std::string name, base::MmapRegion mapping, std::span<const std::uint8_t> bytes)
      : name_(std::move(name)), mapping_(std::move(mapping)), bytes_(bytes) {}
  std::string name_;
  base::MmapRegion mapping_;
  std::vector<std::uint8_t> owned_;
  std::span<const std::uint8_t> bytes_;
};

// Reads a whole file (initrd) into memory; errors name the file.
[[nodiscard]] absl::StatusOr<base::MmapRegion> MapFileReadOnly(const std::string& path);

}  // namespace ember::vmm
