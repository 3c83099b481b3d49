// The Functions image cache (vmm/emberd/functions/image_cache.*) and its rootfs builder, with a
// shell script standing in for ember-rootfs: it "builds" an image holding "built from: " and
// the archive's bytes, and plays the client or a hanging parser when the archive asks it to.
#include "vmm/emberd/functions/image_cache.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "tests/support/files.h"
#include "vmm/emberd/functions/rootfs_builder.h"

namespace ember::emberd::functions {
namespace {

using ember::testing::ReadFile;
using ember::testing::ScopedTempDir;

// An archive starting "swap" makes the tool rewrite the client's archive ($FN_TEST_SWAP) in
// place before it reads its own, as a client racing emberd would; "sleep" makes it hang;
// "whoami" makes its image its uid and groups; "linger" leaves a process of a session of its
// own behind; "refuse" stages a file beside its image and refuses the archive. Fd 42 open, new
// privileges allowed or a --max-bytes other than $FN_TEST_MAX_BYTES make it fail. Called as
// ember-rootfs --format oci --max-bytes N /proc/self/fd/3 image.ext4.
// The archive is read from fd 3, as ember-rootfs reads "/proc/self/fd/N" (a reopen is refused
// to the builder's id).
constexpr char kTool[] = R"sh(#!/bin/sh
[ "$3 $4" = "--max-bytes $FN_TEST_MAX_BYTES" ] || { echo "args: $*" >&2; exit 1; }
archive=$(cat <&3)
case "$archive" in
  refuse*) mkdir "$6.ember-rootfs-x" && echo staged > "$6.ember-rootfs-x/layer"
           echo "too big" >&2; exit 2 ;;
  sleep*) exec sleep 60 ;;
  swap*) printf 'B: the archive swapped in' > "$FN_TEST_SWAP" ;;
  whoami*) { id -u; id -G; } > "$6"; exit 0 ;;
  linger*) setsid sleep 6061 </dev/null >/dev/null 2>&1 & ;;
esac
if [ -e /proc/self/fd/42 ]; then echo "fd 42 was inherited" >&2; exit 1; fi
grep -q '^NoNewPrivs:[[:space:]]*1' /proc/self/status || { echo "may gain privileges" >&2; exit 1; }
{ printf 'built from: '; printf '%s' "$archive"; } > "$6"
)sh";
constexpr std::uint64_t kMaxBytes = 123456;

void Write(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

class FnImageCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The builder runs the tool as an id of its own: it must reach it.
    ASSERT_EQ(::chmod(root_.path().c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(allowed_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(cache_dir_.c_str(), 0700), 0);
    Write(tool_, kTool);
    ASSERT_EQ(::chmod(tool_.c_str(), 0755), 0);
    ::setenv("FN_TEST_SWAP", archive_.c_str(), 1);
    ::setenv("FN_TEST_MAX_BYTES", std::to_string(kMaxBytes).c_str(), 1);
    absl::StatusOr<base::PathRules> rules = base::PathRules::Open({allowed_});
    ASSERT_TRUE(rules.ok()) << rules.status();
    rules_ = std::make_unique<base::PathRules>(std::move(*rules));
  }

  std::unique_ptr<RootfsBuilder> StartBuilder(
      std::chrono::milliseconds timeout = RootfsBuilder::kDefaultTimeout) {
    absl::StatusOr<std::unique_ptr<RootfsBuilder>> builder =
        RootfsBuilder::Start(tool_, timeout, RootfsBuilder::kDefaultBuilderId, kMaxBytes);
    EXPECT_TRUE(builder.ok()) << builder.status();
    return builder.ok() ? std::move(*builder) : nullptr;
  }

  ScopedTempDir root_{"fn-image-cache"};
  const std::string allowed_ = root_.path() + "/allowed";
  const std::string cache_dir_ = root_.path() + "/cache";
  const std::string tool_ = root_.path() + "/ember-rootfs.sh";
  const std::string archive_ = allowed_ + "/image.oci.tar";
  std::unique_ptr<base::PathRules> rules_;
  ImageCache cache_{cache_dir_};
};

TEST_F(FnImageCacheTest, OciImageIsBuiltFromTheArchiveAsHashedThoughItsFileChangesAfter) {
  std::unique_ptr<RootfsBuilder> builder = StartBuilder();
  ASSERT_NE(builder, nullptr);
  Write(archive_, "swap: the archive hashed");
  // The tool plays the client, who owns the archive (it runs as the builder's id).
  ASSERT_EQ(::chmod(archive_.c_str(), 0666), 0);

  absl::StatusOr<std::string> sha = cache_.AddOciArchive(*rules_, *builder, archive_);

  ASSERT_TRUE(sha.ok()) << sha.status();
  ASSERT_EQ(ReadFile(archive_), "B: the archive swapped in");  // the client did rewrite it
  EXPECT_EQ(ReadFile(cache_.PathOf(ImageKey(true, *sha))), "built from: swap: the archive hashed");
}

TEST_F(FnImageCacheTest, RawImageAndArchiveOfTheSameBytesGetImagesOfTheirOwn) {
  std::unique_ptr<RootfsBuilder> builder = StartBuilder();
  ASSERT_NE(builder, nullptr);
  Write(archive_, "the same bytes");

  absl::StatusOr<std::string> raw = cache_.Add(*rules_, "root_image_path", archive_);
  absl::StatusOr<std::string> oci = cache_.AddOciArchive(*rules_, *builder, archive_);

  ASSERT_TRUE(raw.ok()) << raw.status();
  ASSERT_TRUE(oci.ok()) << oci.status();
  EXPECT_EQ(*raw, *oci);
  EXPECT_EQ(ReadFile(cache_.PathOf(ImageKey(false, *raw))), "the same bytes");
  EXPECT_EQ(ReadFile(cache_.PathOf(ImageKey(true, *oci))), "built from: the same bytes");
}

TEST_F(FnImageCacheTest, ArchiveThatIsNotARegularFileIsRefused) {
  std::unique_ptr<RootfsBuilder> builder = StartBuilder();
  ASSERT_NE(builder, nullptr);
  const std::string device = allowed_ + "/disk";
  if (::mknod(device.c_str(), S_IFBLK | 0600, makedev(7, 0)) != 0) {
    GTEST_SKIP() << "mknod of a block device needs root";
  }

  absl::StatusOr<std::string> sha = cache_.AddOciArchive(*rules_, *builder, device);

  ASSERT_EQ(sha.status().code(), absl::StatusCode::kInvalidArgument) << sha.status();
  EXPECT_NE(sha.status().message().find("oci_archive_path: " + device + " is not a regular file"),
            std::string::npos)
      << sha.status();
}

TEST_F(FnImageCacheTest, ImageStaysUntilItsLastReferenceIsReleased) {
  Write(archive_, "an image two functions use");
  absl::StatusOr<std::string> first = cache_.Add(*rules_, "root_image_path", archive_);
  absl::StatusOr<std::string> second = cache_.Add(*rules_, "root_image_path", archive_);
  ASSERT_TRUE(first.ok() && second.ok());
  const std::string image = cache_.PathOf(ImageKey(false, *first));

  cache_.Release(ImageKey(false, *first));
  EXPECT_EQ(::access(image.c_str(), F_OK), 0);
  cache_.Release(ImageKey(false, *second));
  EXPECT_NE(::access(image.c_str(), F_OK), 0);
}

TEST_F(FnImageCacheTest, BuildPastTheTimeoutIsStoppedAndTheNextBuildRuns) {
  std::unique_ptr<RootfsBuilder> builder = StartBuilder(std::chrono::milliseconds(500));
  ASSERT_NE(builder, nullptr);
  Write(archive_, "sleep: a parser that hangs");
  base::UniqueFd hanging(::open(archive_.c_str(), O_RDONLY | O_CLOEXEC));

  absl::Status built = builder->Build(hanging.Get(), cache_dir_ + "/hanging.ext4");

  EXPECT_EQ(built.code(), absl::StatusCode::kDeadlineExceeded) << built;
  EXPECT_NE(built.message().find("oci_archive_path"), std::string::npos) << built;
  EXPECT_NE(::access((cache_dir_ + "/hanging.ext4").c_str(), F_OK), 0);
  Write(archive_, "a plain archive");
  base::UniqueFd plain(::open(archive_.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_TRUE(builder->Build(plain.Get(), cache_dir_ + "/plain.ext4").ok());
}

TEST_F(FnImageCacheTest, RefusedBuildLeavesNothingInTheCache) {
  std::unique_ptr<RootfsBuilder> builder = StartBuilder();
  ASSERT_NE(builder, nullptr);
  Write(archive_, "refuse: staged, then found too big");
  base::UniqueFd archive(::open(archive_.c_str(), O_RDONLY | O_CLOEXEC));

  absl::Status built = builder->Build(archive.Get(), cache_dir_ + "/refused.ext4");

  EXPECT_EQ(built.code(), absl::StatusCode::kInvalidArgument) << built;
  EXPECT_NE(built.message().find("oci_archive_path: too big"), std::string::npos) << built;
  EXPECT_TRUE(std::filesystem::is_empty(cache_dir_));
}

TEST_F(FnImageCacheTest, StartUpCleanUpRemovesTheDirectoriesOfBuildsCutShort) {
  // A build directory with ember-rootfs's staging in it, left by a build emberd died during.
  const std::string build_dir = cache_dir_ + "/.oci-1-0.build";
  ASSERT_EQ(::mkdir(build_dir.c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((build_dir + "/image.ext4.ember-rootfs-abcdef").c_str(), 0700), 0);
  Write(build_dir + "/image.ext4.ember-rootfs-abcdef/zeros", std::string(4096, '\0'));

  cache_.RemoveUnreferenced();

  EXPECT_TRUE(std::filesystem::is_empty(cache_dir_));
}

TEST_F(FnImageCacheTest, ToolGetsNoFdOfTheHelpersButTheArchiveAndNoNewPrivileges) {
  // An fd emberd left inheritable before the helper forked.
  base::UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_EQ(::dup2(null.Get(), 42), 42);
  std::unique_ptr<RootfsBuilder> builder = StartBuilder();
  ::close(42);
  ASSERT_NE(builder, nullptr);
  Write(archive_, "a plain archive");
  base::UniqueFd archive(::open(archive_.c_str(), O_RDONLY | O_CLOEXEC));

  absl::Status built = builder->Build(archive.Get(), cache_dir_ + "/plain.ext4");

  EXPECT_TRUE(built.ok()) << built;
  EXPECT_EQ(ReadFile(cache_dir_ + "/plain.ext4"), "built from: a plain archive");
}

TEST_F(FnImageCacheTest, ToolRunsAsTheBuilderIdAndItsImageBecomesRoots) {
  if (::geteuid() != 0) GTEST_SKIP() << "the builder drops to its id only when emberd is root";
  std::unique_ptr<RootfsBuilder> builder = StartBuilder();
  ASSERT_NE(builder, nullptr);
  Write(archive_, "whoami");
  // The archive is emberd's private copy, root's 0600: the tool reads the fd it is given.
  ASSERT_EQ(::chmod(archive_.c_str(), 0600), 0);
  base::UniqueFd archive(::open(archive_.c_str(), O_RDONLY | O_CLOEXEC));

  absl::Status built = builder->Build(archive.Get(), cache_dir_ + "/whoami.ext4");

  ASSERT_TRUE(built.ok()) << built;
  const std::string id = std::to_string(RootfsBuilder::kDefaultBuilderId);
  EXPECT_EQ(ReadFile(cache_dir_ + "/whoami.ext4"), id + "\n" + id + "\n");
  struct stat st {};
  ASSERT_EQ(::stat((cache_dir_ + "/whoami.ext4").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, 0u);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
  // Its build directory is gone.
  EXPECT_NE(::access((cache_dir_ + "/whoami.ext4.build").c_str(), F_OK), 0);
}

TEST_F(FnImageCacheTest, NothingTheToolStartsOutlivesItsBuild) {
  if (::geteuid() != 0) GTEST_SKIP() << "the build's pid namespace needs root";
  std::unique_ptr<RootfsBuilder> builder = StartBuilder();
  ASSERT_NE(builder, nullptr);
  Write(archive_, "linger");
  base::UniqueFd archive(::open(archive_.c_str(), O_RDONLY | O_CLOEXEC));

  ASSERT_TRUE(builder->Build(archive.Get(), cache_dir_ + "/linger.ext4").ok());

  // Its `sleep 6061` is gone (the kernel ends a pid namespace's processes with its init; give
  // it a moment to reap them).
  const std::string marker("sleep\0" "6061", 10);
  auto lingering = [&] {
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
      if (ReadFile(entry.path().string() + "/cmdline").find(marker) != std::string::npos) {
        return true;
      }
    }
    return false;
  };
  for (int i = 0; i < 100 && lingering(); ++i) ::usleep(10'000);
  EXPECT_FALSE(lingering());
}

TEST_F(FnImageCacheTest, ArchiveLargerThanTheLimitIsRefusedLeavingNothing) {
  std::unique_ptr<RootfsBuilder> builder = StartBuilder();
  ASSERT_NE(builder, nullptr);
  ImageCache small(cache_dir_, /*max_archive_bytes=*/16);
  Write(archive_, "seventeen bytes!!");

  absl::StatusOr<std::string> sha = small.AddOciArchive(*rules_, *builder, archive_);

  EXPECT_EQ(sha.status().code(), absl::StatusCode::kInvalidArgument) << sha.status();
  EXPECT_NE(sha.status().message().find("--fn-max-archive-mib"), std::string::npos);
  EXPECT_TRUE(std::filesystem::is_empty(cache_dir_));
  Write(archive_, "sixteen bytes!!!");
  EXPECT_TRUE(small.AddOciArchive(*rules_, *builder, archive_).ok());
}

}  // namespace
}  // namespace ember::emberd::functions
