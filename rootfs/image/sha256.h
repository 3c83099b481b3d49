#pragma once

#include <nettle/sha2.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace ember::rootfs {

// SHA-256 of bytes fed in pieces (nettle's), for OCI's "sha256:<hex>" digests.
class Sha256 {
 public:
  Sha256() { sha256_init(&ctx_); }
  void Update(const void* bytes, size_t size) {
    sha256_update(&ctx_, size, static_cast<const uint8_t*>(bytes));
  }
  // The digest of everything fed so far, as 64 lower-case hex digits. Call once.
  [[nodiscard]] std::string HexDigest() {
    uint8_t digest[SHA256_DIGEST_SIZE];
    sha256_digest(&ctx_, sizeof(digest), digest);
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string hex;
    for (uint8_t byte : digest) {
      hex += kDigits[byte >> 4];
      hex += kDigits[byte & 0xf];
    }
    return hex;
  }

 private:
  sha256_ctx ctx_;
};

inline std::string Sha256Hex(std::string_view bytes) {
  Sha256 sha;
  sha.Update(bytes.data(), bytes.size());
  return sha.HexDigest();
}

}  // namespace ember::rootfs
