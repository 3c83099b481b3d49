// ImageCache's key for a root that is an overlayfs mount, as containerd's and podman's
// snapshotters give it: the lower layers' identities and the upper directory's fingerprint,
// never a walk of the merged tree. Needs root (mount).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/files.h"
#include "vmm/runtime/image_cache.h"

namespace ember::runtime {
namespace {

namespace fs = std::filesystem;

void WriteFile(const fs::path& path, const std::string& text) { std::ofstream(path) << text; }

class OverlayKeyTest : public ::testing::Test {
 protected:
  OverlayKeyTest() : tmp_("image-cache-overlay-test") {}

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (mounts overlayfs)";
    for (const char* layer : {"layer1", "layer2"}) fs::create_directories(tmp() / layer / "etc");
    WriteFile(tmp() / "layer1" / "etc" / "os-release", "one\n");
    WriteFile(tmp() / "layer2" / "etc" / "hostname", "two\n");
  }

  void TearDown() override {
    for (const fs::path& target : mounted_) ::umount2(target.c_str(), MNT_DETACH);
  }

  fs::path tmp() const { return tmp_.path(); }

  // A container's root: both layers below, an upper and work directory of its own.
  fs::path MountContainer(const std::string& name) {
    fs::path dir = tmp() / name;
    for (const char* sub : {"upper", "work", "rootfs"}) fs::create_directories(dir / sub);
    std::string options = "lowerdir=" + (tmp() / "layer2").string() + ":" +
                          (tmp() / "layer1").string() + ",upperdir=" + (dir / "upper").string() +
                          ",workdir=" + (dir / "work").string();
    if (::mount("overlay", (dir / "rootfs").c_str(), "overlay", 0, options.c_str()) != 0) {
      ADD_FAILURE() << "mount overlay: " << std::strerror(errno);
    } else {
      mounted_.push_back(dir / "rootfs");
    }
    return dir / "rootfs";
  }

  ImageCache Open() const {
    auto cache = ImageCache::Open({.dir = tmp() / "cache",
                                   .ember_rootfs = fs::path(EMBER_BIN_DIR) / "ember-rootfs",
                                   .work_dir = {}});
    EXPECT_TRUE(cache.ok()) << cache.status();
    return std::move(cache).value();
  }

  std::string Key(const ImageCache& cache, const fs::path& root) const {
    auto key = cache.ContentKey(root);
    EXPECT_TRUE(key.ok()) << key.status();
    return key.ok() ? *key : "";
  }

 private:
  testing::ScopedTempDir tmp_;
  std::vector<fs::path> mounted_;
};

TEST_F(OverlayKeyTest, TwoContainersOfTheSameLayersShareTheKey) {
  ImageCache cache = Open();
  EXPECT_EQ(Key(cache, MountContainer("c1")), Key(cache, MountContainer("c2")));
}

TEST_F(OverlayKeyTest, KeyComesFromTheLayersNotTheMergedTree) {
  ImageCache cache = Open();
  fs::path root = MountContainer("c1");
  std::string key = Key(cache, root);
  // The same tree as a plain directory (times kept) is keyed by its walk: another key, so the
  // overlay's key was not a walk of the merged view.
  fs::path copy = tmp() / "copy";
  ASSERT_EQ(std::system(("cp -a " + root.string() + " " + copy.string()).c_str()), 0);
  EXPECT_NE(Key(cache, copy), key);
}

TEST_F(OverlayKeyTest, WriteIntoTheUpperDirectoryChangesTheKey) {
  ImageCache cache = Open();
  fs::path root = MountContainer("c1");
  std::string before = Key(cache, root);
  WriteFile(root / "etc" / "motd", "written by the container\n");
  EXPECT_NE(Key(cache, root), before);
}

// What a snapshotter or runtime makes in a new container's upper directory (mount-point
// directories and empty files) is new in each container: the key must not change with it.
TEST_F(OverlayKeyTest, MountPointsMadeInEachContainersUpperDirectoryStillShareTheKey) {
  ImageCache cache = Open();
  std::vector<std::string> keys;
  for (const char* name : {"c1", "c2"}) {
    fs::path root = MountContainer(name);
    fs::create_directories(root / "run" / "secrets");
    WriteFile(root / "etc" / "resolv.conf", "");
    keys.push_back(Key(cache, root));
  }
  EXPECT_EQ(keys[0], keys[1]);
}

// An upper directory's file of the same path, size and times but other contents (podman cp into
// a stopped container keeps a file's times) is not the same file.
TEST_F(OverlayKeyTest, ALookAlikeFileInAnUpperDirectoryGetsAnotherKey) {
  ImageCache cache = Open();
  std::vector<std::string> keys;
  for (const auto& [name, text] : {std::pair{"c1", "genuine\n"}, std::pair{"c2", "trojan!\n"}}) {
    fs::path root = MountContainer(name);
    WriteFile(root / "etc" / "motd", text);
    struct timespec times[2] = {{1700000000, 42}, {1700000000, 42}};
    EXPECT_EQ(::utimensat(AT_FDCWD, (root / "etc" / "motd").c_str(), times, 0), 0);
    keys.push_back(Key(cache, root));
  }
  EXPECT_NE(keys[0], keys[1]);
}

TEST_F(OverlayKeyTest, OtherLayersGiveAnotherKey) {
  ImageCache cache = Open();
  std::string key = Key(cache, MountContainer("c1"));
  fs::create_directories(tmp() / "other" / "upper");
  fs::create_directories(tmp() / "other" / "work");
  fs::create_directories(tmp() / "other" / "rootfs");
  std::string options = "lowerdir=" + (tmp() / "layer1").string() +
                        ",upperdir=" + (tmp() / "other" / "upper").string() +
                        ",workdir=" + (tmp() / "other" / "work").string();
  ASSERT_EQ(::mount("overlay", (tmp() / "other" / "rootfs").c_str(), "overlay", 0, options.c_str()),
            0);
  std::string other = Key(cache, tmp() / "other" / "rootfs");
  ::umount2((tmp() / "other" / "rootfs").c_str(), MNT_DETACH);
  EXPECT_NE(other, key);
}

TEST_F(OverlayKeyTest, AcquireBuildsTheMergedTree) {
  ImageCache cache = Open();
  auto lease = cache.Acquire(MountContainer("c1"), false);
  ASSERT_TRUE(lease.ok()) << lease.status();
  std::string listing;
  // Both layers' files are in the image (debugfs reads it without mounting).
  std::string command = "debugfs -R 'ls -l /etc' " + lease->image.string() + " 2>/dev/null";
  FILE* out = ::popen(command.c_str(), "r");
  ASSERT_NE(out, nullptr);
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof buffer, out)) listing.append(buffer, n);
  ::pclose(out);
  EXPECT_NE(listing.find("os-release"), std::string::npos) << listing;
  EXPECT_NE(listing.find("hostname"), std::string::npos) << listing;
  EXPECT_TRUE(cache.Release(lease->id).ok());
}

}  // namespace
}  // namespace ember::runtime
