// ImageCache: content keys, one build per image even when creates race, leases that keep an
// image from eviction, writable leases on private copies. Builds real images with the real
// ember-rootfs (through a wrapper that counts its runs).
#include "vmm/runtime/image_cache.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/support/files.h"

namespace ember::runtime {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

void WriteFile(const fs::path& path, const std::string& text) { std::ofstream(path) << text; }

bool SameBytes(const fs::path& a, const fs::path& b) {
  return std::system(("cmp -s " + a.string() + " " + b.string()).c_str()) == 0;
}

class ImageCacheTest : public ::testing::Test {
 protected:
  ImageCacheTest() : tmp_("image-cache-test") {
    fs::create_directories(tools());
    // ember-rootfs behind a wrapper that counts its runs; ember-init and ember-agent beside
    // the wrapper, where the cache looks for them (ember-rootfs itself finds its own).
    WriteFile(tools() / "ember-rootfs", "#!/bin/sh\necho run >> " + (tmp() / "builds").string() +
                                            "\nexec " EMBER_BIN_DIR "/ember-rootfs \"$@\"\n");
    fs::permissions(tools() / "ember-rootfs", fs::perms::owner_all);
    for (const char* program : {"ember-init", "ember-agent"}) {
      fs::create_symlink(fs::path(EMBER_BIN_DIR) / program, tools() / program);
    }
    MakeTree(tree());
  }

  fs::path tmp() const { return tmp_.path(); }
  fs::path tools() const { return tmp() / "tools"; }
  fs::path tree() const { return tmp() / "tree"; }

  static void MakeTree(const fs::path& root) {
    fs::create_directories(root / "bin");
    fs::create_directories(root / "etc");
    WriteFile(root / "bin" / "program", "#!/bin/sh\necho hello\n");
    WriteFile(root / "etc" / "hostname", "box\n");
    fs::create_symlink("program", root / "bin" / "link");
  }

  ImageCache Open(fs::path tool = {}) const {
    auto cache = ImageCache::Open({.dir = tmp() / "cache",
                                   .ember_rootfs = tool.empty() ? tools() / "ember-rootfs" : tool,
                                   .work_dir = {}});
    EXPECT_TRUE(cache.ok()) << cache.status();
    return std::move(cache).value();
  }

  int Builds() const {
    std::string text = testing::ReadFile((tmp() / "builds").string());
    return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
  }

  std::string Key(const ImageCache& cache, const fs::path& root) const {
    auto key = cache.ContentKey(root);
    EXPECT_TRUE(key.ok()) << key.status();
    return key.ok() ? *key : "";
  }

 private:
  testing::ScopedTempDir tmp_;
};

TEST_F(ImageCacheTest, KeyIsStableForAnUnchangedTree) {
  ImageCache cache = Open();
  EXPECT_EQ(Key(cache, tree()), Key(cache, tree()));
  EXPECT_EQ(Key(cache, tree()).size(), 64u);
}

// Names, modes, owners, sizes and times are what an image's author writes in its tar headers:
// a look-alike of a popular image with a trojaned binary of the same size must not get its key
// (the cache is shared by every container on the host).
TEST_F(ImageCacheTest, ALookAlikeTreeWithOtherContentsGetsAnotherKey) {
  ImageCache cache = Open();
  fs::path twin = tmp() / "twin";
  MakeTree(twin);
  WriteFile(twin / "bin" / "program", "#!/bin/sh\necho pwned\n");  // the same size
  ASSERT_EQ(fs::file_size(twin / "bin" / "program"), fs::file_size(tree() / "bin" / "program"));
  struct timespec times[2] = {{1700000000, 123456789}, {1700000000, 123456789}};
  for (const fs::path& root : {tree(), twin}) {
    for (const char* entry : {"bin/program", "etc/hostname", "bin", "etc", ""}) {
      ASSERT_EQ(::utimensat(AT_FDCWD, (root / entry).c_str(), times, AT_SYMLINK_NOFOLLOW), 0);
    }
    ASSERT_EQ(::utimensat(AT_FDCWD, (root / "bin" / "link").c_str(), times, AT_SYMLINK_NOFOLLOW),
              0);
  }
  EXPECT_NE(Key(cache, tree()), Key(cache, twin));
}

TEST_F(ImageCacheTest, AFileRewrittenToTheSameSizeWithItsTimesPutBackChangesTheKey) {
  ImageCache cache = Open();
  struct timespec times[2] = {{1700000000, 5}, {1700000000, 5}};
  fs::path program = tree() / "bin" / "program";
  ASSERT_EQ(::utimensat(AT_FDCWD, program.c_str(), times, 0), 0);
  std::string before = Key(cache, tree());
  WriteFile(program, "#!/bin/sh\necho pwned\n");
  ASSERT_EQ(::utimensat(AT_FDCWD, program.c_str(), times, 0), 0);
  EXPECT_NE(Key(cache, tree()), before);
}

TEST_F(ImageCacheTest, ChangedFileChangesTheKey) {
  ImageCache cache = Open();
  std::string before = Key(cache, tree());
  WriteFile(tree() / "etc" / "hostname", "other\n");
  EXPECT_NE(Key(cache, tree()), before);
}

TEST_F(ImageCacheTest, NewEmptyFileChangesTheKeyButNotItsTime) {
  ImageCache cache = Open();
  std::string before = Key(cache, tree());
  WriteFile(tree() / "etc" / "resolv.conf", "");
  std::string with_file = Key(cache, tree());
  EXPECT_NE(with_file, before);
  struct timespec times[2] = {{1, 0}, {1, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (tree() / "etc" / "resolv.conf").c_str(), times, 0), 0);
  EXPECT_EQ(Key(cache, tree()), with_file);
}

TEST_F(ImageCacheTest, ChangedModeOrSymlinkTargetChangesTheKey) {
  ImageCache cache = Open();
  std::string before = Key(cache, tree());
  fs::permissions(tree() / "bin" / "program", fs::perms::owner_exec, fs::perm_options::add);
  std::string after_mode = Key(cache, tree());
  EXPECT_NE(after_mode, before);
  fs::remove(tree() / "bin" / "link");
  fs::create_symlink("other", tree() / "bin" / "link");
  EXPECT_NE(Key(cache, tree()), after_mode);
}

TEST_F(ImageCacheTest, SecondAcquireOfTheSameImageDoesNotRebuild) {
  ImageCache cache = Open();
  auto first = cache.Acquire(tree(), /*writable=*/false);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(fs::is_regular_file(first->image));
  auto second = cache.Acquire(tree(), /*writable=*/false);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(Builds(), 1);
  EXPECT_EQ(first->image, second->image);
  EXPECT_NE(first->id, second->id);
}

TEST_F(ImageCacheTest, ConcurrentAcquiresFromTwoProcessesBuildOnce) {
  pid_t children[2];
  for (pid_t& child : children) {
    child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ImageCache cache = Open();
      _exit(cache.Acquire(tree(), false).ok() ? 0 : 1);
    }
  }
  for (pid_t child : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  EXPECT_EQ(Builds(), 1);
}

TEST_F(ImageCacheTest, WritableLeaseIsAPrivateCopyRemovedOnRelease) {
  ImageCache cache = Open();
  auto shared = cache.Acquire(tree(), false);
  auto own = cache.Acquire(tree(), /*writable=*/true);
  ASSERT_TRUE(shared.ok() && own.ok());
  EXPECT_TRUE(own->writable);
  EXPECT_NE(own->image, shared->image);
  EXPECT_TRUE(SameBytes(own->image, shared->image));
  {
    std::fstream out(own->image, std::ios::in | std::ios::out | std::ios::binary);
    out.seekp(4096);
    out << "the container's own write";
  }
  EXPECT_FALSE(SameBytes(own->image, shared->image));
  ASSERT_TRUE(cache.Release(own->id).ok());
  EXPECT_FALSE(fs::exists(own->image));
  EXPECT_TRUE(fs::exists(shared->image));
  EXPECT_EQ(Builds(), 1);
}

TEST_F(ImageCacheTest, EvictionKeepsLeasedImagesAndRemovesReleasedOnes) {
  ImageCache cache = Open();
  auto lease = cache.Acquire(tree(), false);
  ASSERT_TRUE(lease.ok()) << lease.status();
  auto freed = cache.EvictUnused();
  ASSERT_TRUE(freed.ok()) << freed.status();
  EXPECT_EQ(*freed, 0u);
  EXPECT_TRUE(fs::exists(lease->image));

  ASSERT_TRUE(cache.Release(lease->id).ok());
  freed = cache.EvictUnused();
  ASSERT_TRUE(freed.ok()) << freed.status();
  EXPECT_GT(*freed, 0u);
  EXPECT_FALSE(fs::exists(lease->image));
  // The next container of the image builds it again.
  ASSERT_TRUE(cache.Acquire(tree(), false).ok());
  EXPECT_EQ(Builds(), 2);
}

TEST_F(ImageCacheTest, BuildsKeepOnlyTheMostRecentlyUsedUnleasedImages) {
  ImageCache cache = Open();
  auto held = cache.Acquire(tree(), false);  // leased throughout: never trimmed
  ASSERT_TRUE(held.ok()) << held.status();
  std::vector<fs::path> images;
  for (size_t i = 0; i < ImageCache::kKeptUnusedImages + 2; ++i) {
    fs::path root = tmp() / ("tree" + std::to_string(i));
    MakeTree(root);
    WriteFile(root / "etc" / "hostname", "box" + std::to_string(i) + "\n");
    auto lease = cache.Acquire(root, false);
    ASSERT_TRUE(lease.ok()) << lease.status();
    ASSERT_TRUE(cache.Release(lease->id).ok());
    images.push_back(lease->image);
  }
  EXPECT_TRUE(fs::exists(held->image));
  // The last build found kKeptUnusedImages + 1 unleased images: the least recently used went.
  EXPECT_FALSE(fs::exists(images[0]));
  for (size_t i = 1; i < images.size(); ++i) EXPECT_TRUE(fs::exists(images[i])) << i;
}

TEST_F(ImageCacheTest, LeaseWhoseHolderIsGoneDoesNotPinTheImage) {
  ImageCache cache = Open();
  fs::path state = tmp() / "container-state";
  fs::create_directory(state);
  auto lease = cache.Acquire(tree(), false, state);
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_EQ(*cache.EvictUnused(), 0u);
  fs::remove(state);  // the container's state went without a Release
  EXPECT_GT(*cache.EvictUnused(), 0u);
  EXPECT_FALSE(fs::exists(lease->image));
}

TEST_F(ImageCacheTest, ReleaseTwiceIsOkAndAMalformedIdIsRefused) {
  ImageCache cache = Open();
  auto lease = cache.Acquire(tree(), false);
  ASSERT_TRUE(lease.ok());
  EXPECT_TRUE(cache.Release(lease->id).ok());
  EXPECT_TRUE(cache.Release(lease->id).ok());
  EXPECT_EQ(cache.Release("../../etc").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.Release(std::string(64, 'a') + "/0123").code(),
            absl::StatusCode::kInvalidArgument);  // relative
  EXPECT_EQ(cache.Release("/etc/leases/" + std::string(64, 'a') + "/../../passwd").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      cache.Release((tmp() / "cache" / "images" / std::string(64, 'a') / "0123").string()).code(),
      absl::StatusCode::kInvalidArgument);  // not under leases/
}

TEST_F(ImageCacheTest, LeaseIsReleasedThroughACacheOpenedElsewhere) {
  ImageCache cache = Open();
  auto lease = cache.Acquire(tree(), /*writable=*/true);
  ASSERT_TRUE(lease.ok()) << lease.status();
  // A `delete` run with another configuration opens another cache directory.
  auto other = ImageCache::Open({.dir = tmp() / "other-cache", .ember_rootfs = {}, .work_dir = {}});
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_TRUE(other->Release(lease->id).ok());
  EXPECT_FALSE(fs::exists(lease->image));
  EXPECT_GT(*cache.EvictUnused(), 0u);  // nothing holds the image any more
}

TEST_F(ImageCacheTest, MissingRootfsIsNotFound) {
  ImageCache cache = Open();
  auto lease = cache.Acquire(tmp() / "nothing", false);
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(lease.status().message()), HasSubstr("nothing"));
  EXPECT_EQ(Builds(), 0);
}

TEST_F(ImageCacheTest, TreeThatEmberRootfsRefusesIsInvalidArgumentWithItsMessage) {
  // ember-rootfs's own refusals are its tests'; a stand-in refuses here (exit 2, one line) to
  // keep this test to what the cache makes of one.
  WriteFile(tmp() / "refusing-rootfs",
            "#!/bin/sh\necho 'ember-rootfs: a device node at /dev/x' >&2\nexit 2\n");
  fs::permissions(tmp() / "refusing-rootfs", fs::perms::owner_all);
  fs::create_symlink(fs::path(EMBER_BIN_DIR) / "ember-init", tmp() / "ember-init");
  fs::create_symlink(fs::path(EMBER_BIN_DIR) / "ember-agent", tmp() / "ember-agent");
  ImageCache cache = Open(tmp() / "refusing-rootfs");
  auto lease = cache.Acquire(tree(), false);
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(lease.status().message()), HasSubstr("a device node at /dev/x"));
  EXPECT_TRUE(fs::is_empty(tmp() / "cache" / "images"));
}

TEST_F(ImageCacheTest, RebuiltGuestProgramChangesTheKey) {
  ImageCache cache = Open();
  std::string before = Key(cache, tree());
  fs::remove(tools() / "ember-agent");
  WriteFile(tools() / "ember-agent", "a different agent");
  EXPECT_NE(Key(cache, tree()), before);
}

TEST(ImageCacheOpen, EmptyDirectoryIsRefused) {
  EXPECT_EQ(ImageCache::Open({}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ember::runtime
