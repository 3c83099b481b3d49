#include "vmm/emberd/functions/image_cache.h"

#include <fcntl.h>
#include <nettle/sha2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <vector>

#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::emberd::functions {
namespace {

constexpr std::size_t kChunk = std::size_t{1} << 20;
constexpr mode_t kImageMode = 0444;

std::string Hex(const std::uint8_t* bytes, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(kDigits[bytes[i] >> 4]);
    out.push_back(kDigits[bytes[i] & 0xf]);
  }
  return out;
}

// Copies `in` to `out` chunk by chunk, leaving all-zero chunks as holes (images are sparse),
// and hashes every byte; returns the hex digest.
absl::StatusOr<std::string> CopyHashing(int in, int out, const std::string& what) {
  sha256_ctx sha;
  sha256_init(&sha);
  std::vector<char> buf(kChunk);
  off_t offset = 0;
  while (true) {
    ssize_t got = ::read(in, buf.data(), buf.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return base::ErrnoError("read", what);
    if (got == 0) break;
    const auto size = static_cast<std::size_t>(got);
    // reinterpret_cast: nettle takes bytes as uint8_t.
    sha256_update(&sha, size, reinterpret_cast<const std::uint8_t*>(buf.data()));
    const bool zero = std::all_of(buf.begin(), buf.begin() + got, [](char c) { return c == 0; });
    // lseek and write: emberd's seccomp filter has no pwrite.
    if (zero) {
      if (::lseek(out, got, SEEK_CUR) < 0) return base::ErrnoError("lseek", what);
    } else {
      for (std::size_t done = 0; done < size;) {
        ssize_t put = ::write(out, buf.data() + done, size - done);
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0) return base::ErrnoError("write", "the image cache's copy of " + what);
        done += static_cast<std::size_t>(put);
      }
    }
    offset += got;
  }
  // A trailing hole: one zero byte at the end gives the copy its size (emberd's seccomp filter
  // has no ftruncate for an unjailed emberd).
  if (offset > 0 && ::lseek(out, 0, SEEK_END) < offset) {
    const char zero = 0;
    if (::lseek(out, offset - 1, SEEK_SET) < 0 || ::write(out, &zero, 1) != 1) {
      return base::ErrnoError("write", "the image cache's copy of " + what);
    }
  }
  if (::fsync(out) != 0) return base::ErrnoError("fsync", "the image cache's copy of " + what);
  std::uint8_t digest[SHA256_DIGEST_SIZE];
  sha256_digest(&sha, sizeof(digest), digest);
  return Hex(digest, sizeof(digest));
}

// The sha256 hex of what `in` holds from its current offset on.
absl::StatusOr<std::string> Hash(int in, const std::string& what) {
  sha256_ctx sha;
  sha256_init(&sha);
  std::vector<char> buf(kChunk);
  while (true) {
    const ssize_t got = ::read(in, buf.data(), buf.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return base::ErrnoError("read", what);
    if (got == 0) break;
    // reinterpret_cast: nettle takes bytes as uint8_t.
    sha256_update(&sha, static_cast<std::size_t>(got),
                  reinterpret_cast<const std::uint8_t*>(buf.data()));
  }
  std::uint8_t digest[SHA256_DIGEST_SIZE];
  sha256_digest(&sha, sizeof(digest), digest);
  return Hex(digest, sizeof(digest));
}

// The very file that passed the rules (`checked`, O_PATH), reopened for reading.
absl::StatusOr<base::UniqueFd> Reopen(const base::UniqueFd& checked, const std::string& path) {
  const std::string via = "/proc/self/fd/" + std::to_string(checked.Get());
  base::UniqueFd in(::open(via.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return base::ErrnoError("open", path);
  return in;
}

std::atomic<unsigned> temp_counter{0};

}  // namespace

absl::StatusOr<std::string> ImageCache::AddOciArchive(const base::PathRules& paths,
                                                      RootfsBuilder& builder,
                                                      const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd checked, paths.OpenFile("oci_archive_path", path));
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd in, Reopen(checked, path));
  EMBER_ASSIGN_OR_RETURN(std::string sha, Hash(in.Get(), path));
  if (::access(PathOf(sha).c_str(), F_OK) == 0) return sha;  // built before
  if (::lseek(in.Get(), 0, SEEK_SET) != 0) return base::ErrnoError("lseek", path);
  const std::string temp = dir_ + "/.oci-" + std::to_string(::getpid()) + "-" +
                           std::to_string(temp_counter++) + ".ext4";
  EMBER_RETURN_IF_ERROR(builder.Build(in.Get(), temp));
  if (::rename(temp.c_str(), PathOf(sha).c_str()) != 0) {
    absl::Status status = base::ErrnoError("rename", temp);
    ::unlink(temp.c_str());
    return status;
  }
  return sha;
}

absl::StatusOr<std::string> ImageCache::Add(const base::PathRules& paths,
                                            const std::string& field, const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd checked, paths.OpenFile(field, path));
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd in, Reopen(checked, path));
  const std::string temp =
      dir_ + "/.new-" + std::to_string(::getpid()) + "-" + std::to_string(temp_counter++);
  // Read-only for everyone: a jailed VMM (a uid of its own) opens its hard link in the jail;
  // on the host only root reaches the cache's 0700 directory.
  base::UniqueFd out(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, kImageMode));
  if (!out) return base::ErrnoError("open", temp);
  absl::StatusOr<std::string> sha = CopyHashing(in.Get(), out.Get(), path);
  if (!sha.ok()) {
    ::unlink(temp.c_str());
    return sha.status();
  }
  struct stat st {};
  if (::fstat(out.Get(), &st) == 0 && st.st_size == 0) {
    ::unlink(temp.c_str());
    return absl::InvalidArgumentError(field + ": " + path + " is empty");
  }
  if (::rename(temp.c_str(), PathOf(*sha).c_str()) != 0) {
    absl::Status status = base::ErrnoError("rename", temp);
    ::unlink(temp.c_str());
    return status;
  }
  return sha;
}

void ImageCache::Remove(const std::string& sha256) const { ::unlink(PathOf(sha256).c_str()); }

absl::StatusOr<std::string> MakeImageDir(const std::string& state_dir) {
  const std::string dir = state_dir + "/fn-images";
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return base::ErrnoError("mkdir", dir);
  return dir;
}

}  // namespace ember::emberd::functions
