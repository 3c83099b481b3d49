#include "vmm/boot/kernel_cache.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "tests/unit/boot/compressors.h"
#include "tests/unit/boot/fake_bzimage.h"

namespace ember::vmm {
namespace {

class KernelCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/ember-cache-test-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = std::string(dir) + "/nested/cache";
    vmlinux_.assign(64 * 1024, 0x42);
    fake_.emplace(testing::Gzip(vmlinux_), static_cast<std::uint32_t>(vmlinux_.size()));
    image_.emplace(KernelImage::FromBytes("test bzImage", fake_->bytes));
    auto parsed = arch::ParseBzImage(image_->bytes());
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    parsed_.emplace(*parsed);
  }

  std::string dir_;
  std::vector<std::uint8_t> vmlinux_;
  std::optional<testing::FakeBzImage> fake_;
  std::optional<KernelImage> image_;
  std::optional<arch::BzImage> parsed_;
};

TEST_F(KernelCacheTest, MissDecompressesAndStoresUnderTheContentKey) {
  KernelCache cache(dir_);
  auto vmlinux = cache.Vmlinux(*image_, *parsed_);
  ASSERT_TRUE(vmlinux.ok()) << vmlinux.status();
  EXPECT_TRUE(std::equal(vmlinux->bytes().begin(), vmlinux->bytes().end(), vmlinux_.begin(),
                         vmlinux_.end()));
  std::string path = cache.PathFor(KernelCache::ContentKey(image_->bytes()));
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0) << path;
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), vmlinux_.size());
}

TEST_F(KernelCacheTest, HitReadsTheStoredFileInsteadOfDecompressing) {
  KernelCache cache(dir_);
  ASSERT_TRUE(cache.Vmlinux(*image_, *parsed_).ok());
  // Replace the entry by one of the same size: a hit must return what the cache holds.
  std::string path = cache.PathFor(KernelCache::ContentKey(image_->bytes()));
  std::string cached(vmlinux_.size(), 'c');
  std::ofstream(path, std::ios::trunc) << cached;
  auto vmlinux = cache.Vmlinux(*image_, *parsed_);
  ASSERT_TRUE(vmlinux.ok());
  EXPECT_EQ(std::string(vmlinux->bytes().begin(), vmlinux->bytes().end()), cached);
  EXPECT_EQ(vmlinux->name(), path);
}

// As a power loss can leave an entry whose rename reached the disk before its data.
TEST_F(KernelCacheTest, EntryOfTheWrongSizeIsAMissAndIsRewritten) {
  KernelCache cache(dir_);
  ASSERT_TRUE(cache.Vmlinux(*image_, *parsed_).ok());
  std::string path = cache.PathFor(KernelCache::ContentKey(image_->bytes()));
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(vmlinux_.size() / 2)), 0);

  auto vmlinux = cache.Vmlinux(*image_, *parsed_);

  ASSERT_TRUE(vmlinux.ok()) << vmlinux.status();
  EXPECT_TRUE(std::equal(vmlinux->bytes().begin(), vmlinux->bytes().end(), vmlinux_.begin(),
                         vmlinux_.end()));
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0) << path;
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), vmlinux_.size());
}

TEST_F(KernelCacheTest, UnwritableCacheStillReturnsTheKernel) {
  KernelCache cache("/proc/ember-cannot-create-this");
  auto vmlinux = cache.Vmlinux(*image_, *parsed_);
  ASSERT_TRUE(vmlinux.ok()) << vmlinux.status();
  EXPECT_EQ(vmlinux->bytes().size(), vmlinux_.size());
}

TEST(KernelCacheKey, IsTheSha256OfTheContent) {
  std::vector<std::uint8_t> abc = {'a', 'b', 'c'};
  EXPECT_EQ(KernelCache::ContentKey(abc),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace ember::vmm
