#pragma once

#include <asm/bootparam.h>

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/statusor.h"

namespace ember::arch {

// How a bzImage's payload (the compressed vmlinux) is packed, from its magic bytes.
enum class PayloadFormat { kGzip, kBzip2, kLzma, kXz, kLzo, kLz4, kZstd, kUnknown };
[[nodiscard]] const char* PayloadFormatName(PayloadFormat format);

// A parsed and checked bzImage. Spans point into the caller's image bytes.
struct BzImage {
  setup_header header;                          // as found in the file
  std::span<const std::uint8_t> protected_mode;  // the part loaded at pref_address
  std::span<const std::uint8_t> payload;         // compressed vmlinux, inside protected_mode
  PayloadFormat format;
  std::uint32_t uncompressed_size;  // the size the kernel's build appended to the payload
};

// The oldest boot protocol with a 64-bit entry point (xloadflags, XLF_KERNEL_64): 2.12.
constexpr std::uint16_t kMinBootProtocol = 0x020c;

// True when `image` carries the setup header magic ("HdrS" at 0x202).
[[nodiscard]] bool LooksLikeBzImage(std::span<const std::uint8_t> image);

// Parses and checks a bzImage: magic, boot protocol version, 64-bit entry, relocatable,
// sizes and offsets within the file. Errors say what is wrong with the kernel.
[[nodiscard]] absl::StatusOr<BzImage> ParseBzImage(std::span<const std::uint8_t> image);

}  // namespace ember::arch
