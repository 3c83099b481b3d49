// Measures ember-runtime's image cache key, which every `create` computes on its container's
// root (image_key_ms: ImageCache::ContentKey, a stat fingerprint of the tree), next to what
// keying by contents would cost on the same tree (content_sha256_ms: SHA-256 of every regular
// file's bytes, in the same sorted walk, page cache warm). Prints figures only; never asserts a
// timing.
#include <dirent.h>
#include <fcntl.h>
#include <nettle/sha2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "perf/bench_options.h"
#include "perf/bench_report.h"
#include "vmm/runtime/image_cache.h"

namespace ember::perf {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kUsage[] =
    "usage: ember-image-key-bench --tree DIR --rootfs EMBER_ROOTFS [--runs N]\n"
    "\n"
    "  --tree DIR            a container's root directory (or any tree shaped like one)\n"
    "  --rootfs EMBER_ROOTFS the ember-rootfs binary (its guest programs beside it are in the key)\n"
    "  --runs N              samples per figure (default 5); each figure is the median\n";

[[noreturn]] void Fail(const std::string& message) { Die("ember-image-key-bench", message); }

struct TreeSize {
  uint64_t entries = 0;
  uint64_t bytes = 0;
};

// SHA-256 over every regular file below the directory open at `dir_fd`, names sorted.
void HashContents(int dir_fd, sha256_ctx& ctx, TreeSize& size, std::vector<uint8_t>& buffer) {
  DIR* dir = ::fdopendir(::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir == nullptr) Fail("cannot list a directory of the tree");
  std::vector<std::string> names;
  while (dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    ++size.entries;
    struct stat st {};
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      int child = ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (child < 0) continue;
      HashContents(child, ctx, size, buffer);
      ::close(child);
    } else if (S_ISREG(st.st_mode)) {
      int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) continue;  // unreadable: not counted
      ssize_t n = 0;
      while ((n = ::read(fd, buffer.data(), buffer.size())) > 0) {
        sha256_update(&ctx, static_cast<size_t>(n), buffer.data());
        size.bytes += static_cast<uint64_t>(n);
      }
      ::close(fd);
    }
  }
}

TreeSize ContentHash(const std::string& tree) {
  int fd = ::open(tree.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) Fail("cannot open " + tree);
  sha256_ctx ctx;
  sha256_init(&ctx);
  TreeSize size;
  std::vector<uint8_t> buffer(1 << 20);
  HashContents(fd, ctx, size, buffer);
  ::close(fd);
  uint8_t digest[SHA256_DIGEST_SIZE];
  sha256_digest(&ctx, sizeof digest, digest);
  return size;
}

int Main(int argc, char** argv) {
  std::string tree;
  std::string rootfs;
  int runs = 5;
  BenchOptions("ember-image-key-bench", kUsage)
      .Text("--tree", &tree, /*required=*/true)
      .Text("--rootfs", &rootfs, /*required=*/true)
      .Number("--runs", &runs, 1)
      .Parse(argc, argv);
  char cache_dir[] = "/tmp/ember-image-key-bench-XXXXXX";
  if (::mkdtemp(cache_dir) == nullptr) Fail("mkdtemp");
  auto cache = runtime::ImageCache::Open({.dir = cache_dir, .ember_rootfs = rootfs, .work_dir = {}});
  if (!cache.ok()) Fail(cache.status().ToString());
  std::vector<double> key_ms;
  std::vector<double> content_ms;
  TreeSize size;
  (void)ContentHash(tree);  // warm the page cache for both
  for (int i = 0; i < runs; ++i) {
    auto start = Clock::now();
    auto key = cache->ContentKey(tree);
    key_ms.push_back(SecondsSince(start) * 1000);
    if (!key.ok()) Fail(key.status().ToString());
    start = Clock::now();
    size = ContentHash(tree);
    content_ms.push_back(SecondsSince(start) * 1000);
  }
  std::error_code ignored;
  std::filesystem::remove_all(cache_dir, ignored);
  PrintNote(tree + ": " + std::to_string(size.entries) + " entries, " +
            std::to_string(size.bytes >> 20) + " MiB in regular files; medians of " +
            std::to_string(runs) + " runs, page cache warm");
  PrintFigure("image_key_ms", Median(key_ms), "ms", "content_sha256_ms", Median(content_ms));
  return 0;
}

}  // namespace
}  // namespace ember::perf

int main(int argc, char** argv) { return ember::perf::Main(argc, argv); }
