#include "vmm/arch/x86_64/bzimage.h"

#include <cstring>

#include "absl/strings/str_format.h"

namespace ember::arch {
namespace {

// Offsets in the file (Documentation/arch/x86/boot.rst, "The real-mode kernel header").
constexpr std::size_t kSetupHeaderOffset = 0x1f1;
constexpr std::size_t kHeaderMagicOffset = 0x202;
constexpr std::size_t kSetupHeaderEndField = 0x201;  // byte: header length past 0x202
constexpr std::uint32_t kHeaderMagic = 0x53726448;   // "HdrS"
constexpr std::uint16_t kBootFlag = 0xaa55;
constexpr std::size_t kSectorSize = 512;
// "If setup_sects is 0, the real value is 4."
constexpr std::uint8_t kDefaultSetupSects = 4;

absl::Status Invalid(const std::string& what) {
  return absl::InvalidArgumentError("invalid bzImage: " + what);
}

PayloadFormat DetectFormat(std::span<const std::uint8_t> p) {
  auto starts = [&](std::initializer_list<std::uint8_t> magic) {
    return p.size() >= magic.size() && std::equal(magic.begin(), magic.end(), p.begin());
  };
  if (starts({0x1f, 0x8b})) return PayloadFormat::kGzip;
  if (starts({'B', 'Z', 'h'})) return PayloadFormat::kBzip2;
  if (starts({0xfd, '7', 'z', 'X', 'Z', 0x00})) return PayloadFormat::kXz;
  if (starts({0x28, 0xb5, 0x2f, 0xfd})) return PayloadFormat::kZstd;
  if (starts({0x02, 0x21, 0x4c, 0x18})) return PayloadFormat::kLz4;  // legacy lz4 frame
  if (starts({0x89, 'L', 'Z', 'O'})) return PayloadFormat::kLzo;
  if (starts({0x5d, 0x00, 0x00})) return PayloadFormat::kLzma;       // lzma_alone, lc3 lp0 pb2
  return PayloadFormat::kUnknown;
}

}  // namespace

const char* PayloadFormatName(PayloadFormat format) {
  switch (format) {
    case PayloadFormat::kGzip: return "gzip";
    case PayloadFormat::kBzip2: return "bzip2";
    case PayloadFormat::kLzma: return "lzma";
    case PayloadFormat::kXz: return "xz";
    case PayloadFormat::kLzo: return "lzo";
    case PayloadFormat::kLz4: return "lz4";
    case PayloadFormat::kZstd: return "zstd";
    case PayloadFormat::kUnknown: break;
  }
  return "unknown";
}

bool LooksLikeBzImage(std::span<const std::uint8_t> image) {
  std::uint32_t magic = 0;
  if (image.size() < kHeaderMagicOffset + sizeof(magic)) return false;
  std::memcpy(&magic, image.data() + kHeaderMagicOffset, sizeof(magic));
  return magic == kHeaderMagic;
}

absl::StatusOr<BzImage> ParseBzImage(std::span<const std::uint8_t> image) {
  if (image.size() < kSetupHeaderOffset + sizeof(setup_header)) {
    return Invalid("file is shorter than the setup header (truncated?)");
  }
  if (!LooksLikeBzImage(image)) return Invalid("no \"HdrS\" setup header magic");
  BzImage bz{};
  // The header sits at an odd offset; copy it out rather than alias it.
  std::memcpy(&bz.header, image.data() + kSetupHeaderOffset, sizeof(setup_header));
  const setup_header& h = bz.header;
  if (h.boot_flag != kBootFlag) return Invalid("boot flag is not 0xaa55");
  if (h.version < kMinBootProtocol) {
    return Invalid(absl::StrFormat("boot protocol %u.%02u is too old; 64-bit boot needs %u.%02u",
                                   h.version >> 8, h.version & 0xff, kMinBootProtocol >> 8,
                                   kMinBootProtocol & 0xff));
  }
  if (!(h.xloadflags & XLF_KERNEL_64)) {
    return Invalid("the kernel has no 64-bit entry point (a 32-bit-only kernel)");
  }
  if (!h.relocatable_kernel) return Invalid("the kernel is not relocatable");
  // The loader rounds pref_address up to it with a mask, which only works for a power of two.
  if (h.kernel_alignment == 0 || (h.kernel_alignment & (h.kernel_alignment - 1)) != 0) {
    return Invalid(absl::StrFormat("kernel_alignment 0x%x is not a power of two",
                                   h.kernel_alignment));
  }
  if (image[kSetupHeaderEndField] + kHeaderMagicOffset < offsetof(setup_header, init_size) +
                                                             kSetupHeaderOffset) {
    return Invalid("setup header is too short for its protocol version");
  }

  std::size_t setup_sects = h.setup_sects == 0 ? kDefaultSetupSects : h.setup_sects;
  std::size_t pm_offset = (setup_sects + 1) * kSectorSize;
  if (pm_offset >= image.size()) {
    return Invalid("no protected-mode kernel after the setup code (truncated?)");
  }
  bz.protected_mode = image.subspan(pm_offset);
  if (std::uint64_t{h.payload_offset} + h.payload_length > bz.protected_mode.size() ||
      h.payload_length < sizeof(std::uint32_t)) {
    return Invalid("payload lies beyond the end of the file (truncated?)");
  }
  bz.payload = bz.protected_mode.subspan(h.payload_offset, h.payload_length);
  bz.format = DetectFormat(bz.payload);
  // The kernel's build appends the uncompressed size, little-endian, to every payload.
  std::memcpy(&bz.uncompressed_size, bz.payload.data() + bz.payload.size() - 4, 4);
  if (h.init_size < bz.protected_mode.size()) {
    return Invalid("init_size is smaller than the protected-mode kernel");
  }
  return bz;
}

}  // namespace ember::arch
