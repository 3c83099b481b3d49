#include "tests/unit/boot/compressors.h"

#include <bzlib.h>
#include <gtest/gtest.h>
#include <lz4.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include <cstring>

namespace ember::testing {
namespace {

void AppendSize(std::vector<std::uint8_t>& payload, std::uint32_t size) {
  std::uint8_t bytes[4];
  std::memcpy(bytes, &size, 4);
  payload.insert(payload.end(), bytes, bytes + 4);
}

}  // namespace

// Each encoder writes its stream as the kernel's build does, size trailer included.
std::vector<std::uint8_t> Gzip(const std::vector<std::uint8_t>& in) {
  z_stream s{};
  deflateInit2(&s, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::vector<std::uint8_t> out(deflateBound(&s, in.size()));
  s.next_in = const_cast<Bytef*>(in.data());
  s.avail_in = static_cast<uInt>(in.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&s, Z_FINISH), Z_STREAM_END);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;  // gzip's own ISIZE trailer is the size
}

std::vector<std::uint8_t> Bzip2(const std::vector<std::uint8_t>& in) {
  std::vector<std::uint8_t> out(in.size() + in.size() / 100 + 600);
  unsigned int len = static_cast<unsigned int>(out.size());
  EXPECT_EQ(BZ2_bzBuffToBuffCompress(reinterpret_cast<char*>(out.data()), &len,
                                     reinterpret_cast<char*>(const_cast<std::uint8_t*>(in.data())),
                                     static_cast<unsigned int>(in.size()), 9, 0, 0),
            BZ_OK);
  out.resize(len);
  AppendSize(out, static_cast<std::uint32_t>(in.size()));
  return out;
}

std::vector<std::uint8_t> Xz(const std::vector<std::uint8_t>& in) {
  std::vector<std::uint8_t> out(lzma_stream_buffer_bound(in.size()));
  std::size_t pos = 0;
  EXPECT_EQ(lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, nullptr, in.data(), in.size(), out.data(),
                                    &pos, out.size()),
            LZMA_OK);
  out.resize(pos);
  AppendSize(out, static_cast<std::uint32_t>(in.size()));
  return out;
}

std::vector<std::uint8_t> LzmaAlone(const std::vector<std::uint8_t>& in) {
  lzma_options_lzma options;
  lzma_lzma_preset(&options, 6);
  lzma_stream s = LZMA_STREAM_INIT;
  EXPECT_EQ(lzma_alone_encoder(&s, &options), LZMA_OK);
  std::vector<std::uint8_t> out(in.size() * 2 + 1024);
  s.next_in = in.data();
  s.avail_in = in.size();
  s.next_out = out.data();
  s.avail_out = out.size();
  EXPECT_EQ(lzma_code(&s, LZMA_FINISH), LZMA_STREAM_END);
  out.resize(s.total_out);
  lzma_end(&s);
  AppendSize(out, static_cast<std::uint32_t>(in.size()));
  return out;
}

std::vector<std::uint8_t> Zstd(const std::vector<std::uint8_t>& in) {
  std::vector<std::uint8_t> out(ZSTD_compressBound(in.size()));
  std::size_t n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 19);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  AppendSize(out, static_cast<std::uint32_t>(in.size()));
  return out;
}

// lz4's legacy frame with 128 KiB blocks, so the sample spans several blocks.
std::vector<std::uint8_t> Lz4Legacy(const std::vector<std::uint8_t>& in) {
  std::vector<std::uint8_t> out = {0x02, 0x21, 0x4c, 0x18};
  constexpr std::size_t kBlock = 128 * 1024;
  for (std::size_t pos = 0; pos < in.size(); pos += kBlock) {
    int n = static_cast<int>(std::min(kBlock, in.size() - pos));
    std::vector<char> block(static_cast<std::size_t>(LZ4_compressBound(n)));
    int c = LZ4_compress_default(reinterpret_cast<const char*>(in.data() + pos), block.data(), n,
                                 static_cast<int>(block.size()));
    AppendSize(out, static_cast<std::uint32_t>(c));
    out.insert(out.end(), block.begin(), block.begin() + c);
  }
  AppendSize(out, static_cast<std::uint32_t>(in.size()));
  return out;
}

}  // namespace ember::testing
