#include "vmm/emberd/functions/image_cache.h"

#include <fcntl.h>
#include <nettle/sha2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <functional>
#include <limits>
#include <vector>

#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"
#include "vmm/emberd/store.h"

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
// and hashes every byte; returns the hex digest. `too_large` (if given) once more than `limit`
// bytes were read.
absl::StatusOr<std::string> CopyHashing(
    int in, int out, const std::string& what,
    std::uint64_t limit = std::numeric_limits<std::uint64_t>::max(),
    const std::function<absl::Status()>& too_large = nullptr) {
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
    if (static_cast<std::uint64_t>(offset) + size > limit && too_large) return too_large();
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

// The very file that passed the rules (`checked`, O_PATH), reopened for reading.
absl::StatusOr<base::UniqueFd> Reopen(const base::UniqueFd& checked, const std::string& path) {
  const std::string via = "/proc/self/fd/" + std::to_string(checked.Get());
  base::UniqueFd in(::open(via.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return base::ErrnoError("open", path);
  return in;
}

std::atomic<unsigned> temp_counter{0};

std::string TempName(const std::string& dir, const std::string& kind) {
  return dir + "/." + kind + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(temp_counter++);
}

// Unlinks a temporary file of the cache as its scope ends.
struct TempGone {
  const std::string& path;
  ~TempGone() { ::unlink(path.c_str()); }
};

}  // namespace

std::string ImageKey(bool from_archive, const std::string& sha256) {
  return from_archive ? "oci-" + sha256 : sha256;
}

absl::StatusOr<std::string> ImageCache::AddOciArchive(const base::PathRules& paths,
                                                      RootfsBuilder& builder,
                                                      const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd checked, paths.OpenFile("oci_archive_path", path));
  // Not a device: emberd (root) would read a whole disk and hand it to the parser.
  struct stat st {};
  if (::fstat(checked.Get(), &st) != 0) return base::ErrnoError("fstat", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError("oci_archive_path: " + path + " is not a regular file");
  }
  auto too_large = [&] {
    return absl::InvalidArgumentError(
        "oci_archive_path: " + path + " is larger than this emberd takes (" +
        std::to_string(max_archive_bytes_ >> 20) + " MiB, --fn-max-archive-mib)");
  };
  if (static_cast<std::uint64_t>(st.st_size) > max_archive_bytes_) return too_large();
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd in, Reopen(checked, path));
  // The image is built from the very bytes hashed: a private copy, which the client who owns
  // the archive cannot rewrite between the hash and the build.
  const std::string copy = TempName(dir_, "archive");
  const TempGone copy_gone{copy};
  std::string sha;
  {
    base::UniqueFd out(::open(copy.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!out) return base::ErrnoError("open", copy);
    // Bounded again while it is read: the client's file may grow after the look.
    EMBER_ASSIGN_OR_RETURN(sha,
                           CopyHashing(in.Get(), out.Get(), path, max_archive_bytes_, too_large));
  }
  const std::string key = ImageKey(/*from_archive=*/true, sha);
  {
    std::lock_guard lock(mu_);
    if (::access(PathOf(key).c_str(), F_OK) == 0) {  // built before
      ++refs_[key];
      return sha;
    }
  }
  base::UniqueFd archive(::open(copy.c_str(), O_RDONLY | O_CLOEXEC));
  if (!archive) return base::ErrnoError("open", copy);
  const std::string temp = TempName(dir_, "oci");
  EMBER_RETURN_IF_ERROR(builder.Build(archive.Get(), temp));
  EMBER_RETURN_IF_ERROR(Install(temp, key));
  return sha;
}

absl::StatusOr<std::string> ImageCache::Add(const base::PathRules& paths, const std::string& field,
                                            const std::string& path) {
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd checked, paths.OpenFile(field, path));
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd in, Reopen(checked, path));
  const std::string temp = TempName(dir_, "new");
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
  EMBER_RETURN_IF_ERROR(Install(temp, ImageKey(/*from_archive=*/false, *sha)));
  return sha;
}

absl::Status ImageCache::Install(const std::string& temp, const std::string& key) {
  std::lock_guard lock(mu_);
  if (::access(PathOf(key).c_str(), F_OK) == 0) {
    ::unlink(temp.c_str());  // the same content, there already (and maybe in use)
  } else if (::rename(temp.c_str(), PathOf(key).c_str()) != 0) {
    absl::Status status = base::ErrnoError("rename", temp);
    ::unlink(temp.c_str());
    return status;
  }
  ++refs_[key];
  return absl::OkStatus();
}

void ImageCache::Acquire(const std::string& key) {
  std::lock_guard lock(mu_);
  ++refs_[key];
}

void ImageCache::Release(const std::string& key) {
  std::lock_guard lock(mu_);
  auto it = refs_.find(key);
  if (it == refs_.end()) return;  // never taken: nothing of the caller's to remove
  if (--it->second > 0) return;
  refs_.erase(it);
  ::unlink(PathOf(key).c_str());
}

void ImageCache::RemoveUnreferenced() {
  std::lock_guard lock(mu_);
  const std::string ext = ".ext4";
  std::error_code error;
  for (auto it = std::filesystem::directory_iterator(dir_, error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    const std::string file = it->path().filename().string();
    const bool image =
        file.size() > ext.size() && file.compare(file.size() - ext.size(), ext.size(), ext) == 0;
    if (image && refs_.contains(file.substr(0, file.size() - ext.size()))) continue;
    // Unused, a copy cut short, or a directory: a build directory (RootfsBuilder's) of a build
    // cut short with emberd (its helper dies with it, before it removes the directory).
    (void)RemoveTree(it->path().string());
  }
}

absl::StatusOr<std::string> MakeImageDir(const std::string& state_dir) {
  const std::string dir = state_dir + "/fn-images";
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return base::ErrnoError("mkdir", dir);
  return dir;
}

}  // namespace ember::emberd::functions
