#include "vmm/boot/payload_decompress.h"

#include <bzlib.h>
#include <lz4.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include <cstring>
#include <limits>
#include <string>

namespace ember::vmm {
namespace {

using arch::PayloadFormat;

absl::Status Corrupt(PayloadFormat format, const std::string& what) {
  return absl::InvalidArgumentError(std::string("cannot decompress the kernel's ") +
                                    arch::PayloadFormatName(format) + " payload: " + what);
}

// The libraries take 32-bit lengths in places; kernels are far below that.
unsigned int Len32(std::size_t n) { return static_cast<unsigned int>(n); }

absl::Status Gunzip(std::span<const std::uint8_t> in, std::span<std::uint8_t> out) {
  z_stream s{};
  if (inflateInit2(&s, 16 + MAX_WBITS) != Z_OK) return Corrupt(PayloadFormat::kGzip, "init");
  s.next_in = const_cast<Bytef*>(in.data());  // zlib's API is not const-correct
  s.avail_in = Len32(in.size());
  s.next_out = out.data();
  s.avail_out = Len32(out.size());
  int rc = inflate(&s, Z_FINISH);
  std::size_t produced = out.size() - s.avail_out;
  inflateEnd(&s);
  if (rc != Z_STREAM_END) return Corrupt(PayloadFormat::kGzip, s.msg ? s.msg : "truncated stream");
  if (produced != out.size()) return Corrupt(PayloadFormat::kGzip, "short output");
  return absl::OkStatus();
}

absl::Status Bunzip2(std::span<const std::uint8_t> in, std::span<std::uint8_t> out) {
  bz_stream s{};
  if (BZ2_bzDecompressInit(&s, 0, 0) != BZ_OK) return Corrupt(PayloadFormat::kBzip2, "init");
  s.next_in = reinterpret_cast<char*>(const_cast<std::uint8_t*>(in.data()));  // bzlib's char API
  s.avail_in = Len32(in.size());
  s.next_out = reinterpret_cast<char*>(out.data());
  s.avail_out = Len32(out.size());
  int rc = BZ_OK;
  while (rc == BZ_OK && s.avail_out > 0 && s.avail_in > 0) rc = BZ2_bzDecompress(&s);
  std::size_t produced = out.size() - s.avail_out;
  BZ2_bzDecompressEnd(&s);
  if (rc != BZ_STREAM_END && !(rc == BZ_OK && produced == out.size())) {
    return Corrupt(PayloadFormat::kBzip2, "error " + std::to_string(rc));
  }
  if (produced != out.size()) return Corrupt(PayloadFormat::kBzip2, "short output");
  return absl::OkStatus();
}

// xz (.xz container) and lzma (lzma_alone) both go through liblzma, whose dictionary is as
// large as the stream's header asks (up to 4 GiB): kMaxDecompressorMemory bounds it.
absl::Status Unlzma(PayloadFormat format, std::span<const std::uint8_t> in,
                    std::span<std::uint8_t> out) {
  lzma_stream s = LZMA_STREAM_INIT;
  lzma_ret rc = format == PayloadFormat::kXz
                    ? lzma_stream_decoder(&s, kMaxDecompressorMemory, 0)
                    : lzma_alone_decoder(&s, kMaxDecompressorMemory);
  if (rc != LZMA_OK) return Corrupt(format, "init");
  s.next_in = in.data();
  s.avail_in = in.size();
  s.next_out = out.data();
  s.avail_out = out.size();
  do {
    rc = lzma_code(&s, LZMA_FINISH);
  } while (rc == LZMA_OK && s.avail_out > 0);
  std::size_t produced = out.size() - s.avail_out;
  const std::uint64_t needed = lzma_memusage(&s);
  lzma_end(&s);
  if (rc == LZMA_MEMLIMIT_ERROR) {
    constexpr std::uint64_t kMiB = 1 << 20;
    return Corrupt(format, "the stream needs " + std::to_string((needed + kMiB - 1) / kMiB) +
                               " MiB of memory to decompress; at most " +
                               std::to_string(kMaxDecompressorMemory / kMiB) + " MiB is allowed");
  }
  // lzma_alone streams without an end marker stop when the output is full.
  bool complete = rc == LZMA_STREAM_END || (rc == LZMA_OK && produced == out.size());
  if (!complete) return Corrupt(format, "liblzma error " + std::to_string(rc));
  if (produced != out.size()) return Corrupt(format, "short output");
  return absl::OkStatus();
}

absl::Status Unzstd(std::span<const std::uint8_t> in, std::span<std::uint8_t> out) {
  // The payload is one frame followed by the appended size; decompress just the frame.
  std::size_t frame = ZSTD_findFrameCompressedSize(in.data(), in.size());
  if (ZSTD_isError(frame)) return Corrupt(PayloadFormat::kZstd, ZSTD_getErrorName(frame));
  std::size_t produced = ZSTD_decompress(out.data(), out.size(), in.data(), frame);
  if (ZSTD_isError(produced)) return Corrupt(PayloadFormat::kZstd, ZSTD_getErrorName(produced));
  if (produced != out.size()) return Corrupt(PayloadFormat::kZstd, "short output");
  return absl::OkStatus();
}

// The kernel uses lz4's legacy frame: a magic, then blocks each preceded by its
// compressed length; the build's 4-byte size trailer follows the last block.
absl::Status Unlz4(std::span<const std::uint8_t> in, std::span<std::uint8_t> out) {
  constexpr std::uint32_t kLegacyMagic = 0x184c2102;
  std::size_t pos = 0, produced = 0;
  while (in.size() - pos >= 4) {
    std::uint32_t word;
    std::memcpy(&word, in.data() + pos, 4);
    pos += 4;
    if (word == kLegacyMagic) continue;
    if (pos == in.size()) break;  // that word was the size trailer
    if (word > in.size() - pos || word > static_cast<std::uint32_t>(LZ4_compressBound(8 << 20))) {
      return Corrupt(PayloadFormat::kLz4, "block length runs past the payload");
    }
    int n = LZ4_decompress_safe(reinterpret_cast<const char*>(in.data() + pos),
                                reinterpret_cast<char*>(out.data() + produced),
                                static_cast<int>(word), static_cast<int>(out.size() - produced));
    if (n < 0) return Corrupt(PayloadFormat::kLz4, "malformed block");
    produced += static_cast<std::size_t>(n);
    pos += word;
  }
  if (produced != out.size()) return Corrupt(PayloadFormat::kLz4, "short output");
  return absl::OkStatus();
}

}  // namespace

bool CanDecompress(PayloadFormat format) {
  return format != PayloadFormat::kLzo && format != PayloadFormat::kUnknown;
}

absl::StatusOr<std::vector<std::uint8_t>> DecompressPayload(PayloadFormat format,
                                                            std::span<const std::uint8_t> payload,
                                                            std::uint32_t expected_size) {
  if (!CanDecompress(format)) return Corrupt(format, "format not supported");
  if (expected_size == 0 || expected_size > kMaxUncompressedKernel) {
    return Corrupt(format, "implausible uncompressed size " + std::to_string(expected_size));
  }
  std::vector<std::uint8_t> out(expected_size);
  absl::Status status;
  switch (format) {
    case PayloadFormat::kGzip: status = Gunzip(payload, out); break;
    case PayloadFormat::kBzip2: status = Bunzip2(payload, out); break;
    case PayloadFormat::kXz:
    case PayloadFormat::kLzma: status = Unlzma(format, payload, out); break;
    case PayloadFormat::kZstd: status = Unzstd(payload, out); break;
    case PayloadFormat::kLz4: status = Unlz4(payload, out); break;
    default: status = Corrupt(format, "format not supported");
  }
  if (!status.ok()) return status;
  return out;
}

}  // namespace ember::vmm
