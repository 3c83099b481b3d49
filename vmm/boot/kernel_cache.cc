#include "vmm/boot/kernel_cache.h"

#include <nettle/sha2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "vmm/base/atomic_file.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/boot/payload_decompress.h"

namespace ember::vmm {
namespace {

absl::Status MakeDirs(const std::string& path) {
  for (std::size_t pos = 1; pos != std::string::npos;) {
    pos = path.find('/', pos + 1);
    std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return base::ErrnoError("mkdir", prefix);
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string KernelCache::DefaultDir() {
  if (const char* dir = std::getenv("EMBER_KERNEL_CACHE")) return dir;
  if (::geteuid() == 0) return "/var/cache/ember/kernels";
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) {
    return std::string(xdg) + "/ember/kernels";
  }
  if (const char* home = std::getenv("HOME"); home && *home) {
    return std::string(home) + "/.cache/ember/kernels";
  }
  return "";
}

std::string KernelCache::ContentKey(std::span<const std::uint8_t> bytes) {
  sha256_ctx context;
  sha256_init(&context);
  sha256_update(&context, bytes.size(), bytes.data());
  std::uint8_t digest[SHA256_DIGEST_SIZE];
  sha256_digest(&context, sizeof digest, digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string key;
  for (std::size_t i = 0; i < sizeof digest; ++i) {
    key += kHex[digest[i] >> 4];
    key += kHex[digest[i] & 0xf];
  }
  return key;
}

std::string KernelCache::PathFor(const std::string& key) const {
  return dir_ + "/" + key + ".vmlinux";
}

absl::StatusOr<KernelImage> KernelCache::Vmlinux(const KernelImage& bzimage,
                                                 const arch::BzImage& parsed) const {
  std::string path;
  if (!dir_.empty()) {
    path = PathFor(ContentKey(bzimage.bytes()));
    if (::access(path.c_str(), R_OK) == 0) {
      auto cached = KernelImage::FromFile(path);
      // An entry of another size is not this kernel: one cut short by a crash before its
      // data reached the disk, say. Decompressing again replaces it.
      if (cached.ok() && cached->bytes().size() == parsed.uncompressed_size) {
        EMBER_LOG(kDebug) << "kernel cache hit: " << path;
        return cached;
      }
      EMBER_LOG(kWarn) << "ignoring kernel cache entry " << path << ": "
                       << (cached.ok() ? "it is " + std::to_string(cached->bytes().size()) +
                                             " bytes, the kernel " +
                                             std::to_string(parsed.uncompressed_size)
                                       : std::string(cached.status().message()));
    }
  }
  EMBER_ASSIGN_OR_RETURN(std::vector<std::uint8_t> vmlinux,
                         DecompressPayload(parsed.format, parsed.payload, parsed.uncompressed_size));
  if (!path.empty()) {
    absl::Status stored = MakeDirs(dir_);
    // Bytes as chars for the writer; the same memory, only the element type differs.
    std::string_view bytes(reinterpret_cast<const char*>(vmlinux.data()), vmlinux.size());
    if (stored.ok()) stored = base::WriteFileAtomically(path, bytes);
    if (!stored.ok()) {
      EMBER_LOG(kWarn) << "kernel cache not written: " << stored.message();
    }
  }
  return KernelImage::FromBytes(bzimage.name() + " (decompressed)", std::move(vmlinux));
}

}  // namespace ember::vmm
