#include "vmm/boot/guest_loader.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "tests/support/process.h"
#include "tests/unit/boot/compressors.h"
#include "tests/unit/boot/fake_bzimage.h"
#include "vmm/arch/x86_64/layout.h"

namespace ember::vmm {
namespace {

using arch::kMiB;

class GuestLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto memory = base::GuestMemory::Create(arch::GuestRamRanges(64 * kMiB));
    ASSERT_TRUE(memory.ok());
    memory_.emplace(std::move(*memory));
  }

  boot_params ZeroPage() {
    auto params = memory_->ReadObj<boot_params>(arch::kZeroPageAddr);
    EXPECT_TRUE(params.ok());
    return *params;
  }

  std::optional<base::GuestMemory> memory_;
};

TEST_F(GuestLoaderTest, SelfDecompressingBzImageEntersAtItsSixtyFourBitEntry) {
  testing::FakeBzImage fake({0x89, 'L', 'Z', 'O', 0, 0}, 4096);  // LZO: no host decompression
  KernelImage kernel = KernelImage::FromBytes("bz", fake.bytes);
  auto guest = LoadGuest(*memory_, {&kernel, "", "console=ttyS0", true, nullptr});
  ASSERT_TRUE(guest.ok()) << guest.status();
  EXPECT_EQ(guest->path, BootPath::kBzImageSelfDecompressing);
  EXPECT_EQ(guest->entry, 0x1000000u + 0x200);
  // The protected-mode code sits at pref_address; the zero page carries the file's header.
  auto first = memory_->ReadObj<std::uint8_t>(0x1000000 + testing::FakeBzImage::kPayloadOffset);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, 0x89);
  boot_params params = ZeroPage();
  EXPECT_EQ(params.hdr.version, 0x020f);
  EXPECT_EQ(params.hdr.init_size, 0x100000u);
  EXPECT_EQ(params.hdr.type_of_loader, 0xff);
  EXPECT_EQ(params.hdr.cmd_line_ptr, arch::kCmdlineAddr);
}

TEST_F(GuestLoaderTest, StandardPathCanBeChosenForASupportedFormat) {
  std::vector<std::uint8_t> not_elf(4096, 0x90);
  testing::FakeBzImage fake(testing::Gzip(not_elf), 4096);
  KernelImage kernel = KernelImage::FromBytes("bz", fake.bytes);
  auto guest = LoadGuest(*memory_, {&kernel, "", "", /*decompress_on_host=*/false, nullptr});
  ASSERT_TRUE(guest.ok()) << guest.status();
  EXPECT_EQ(guest->path, BootPath::kBzImageSelfDecompressing);
}

TEST_F(GuestLoaderTest, HostDecompressedPayloadMustBeAnElfKernel) {
  std::vector<std::uint8_t> not_elf(4096, 0x90);
  testing::FakeBzImage fake(testing::Gzip(not_elf), 4096);
  KernelImage kernel = KernelImage::FromBytes("bz", fake.bytes);
  auto guest = LoadGuest(*memory_, {&kernel, "", "", true, nullptr});
  ASSERT_FALSE(guest.ok());
  EXPECT_EQ(guest.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(guest.status().message().find("no ELF magic"), std::string::npos);
}

TEST_F(GuestLoaderTest, KernelNeedingMoreRoomThanRamIsRejected) {
  testing::FakeBzImage fake({0x89, 'L', 'Z', 'O'}, 4096);
  fake.header().init_size = 128 * kMiB;
  fake.Commit();
  KernelImage kernel = KernelImage::FromBytes("bz", fake.bytes);
  auto guest = LoadGuest(*memory_, {&kernel, "", "", true, nullptr});
  ASSERT_FALSE(guest.ok());
  EXPECT_NE(guest.status().message().find("to decompress itself"), std::string::npos);
}

// Rounded up to the alignment, this address would wrap to 0, under the zero page.
TEST_F(GuestLoaderTest, PrefAddressThatWrapsWhenAlignedIsRejected) {
  testing::FakeBzImage fake({0x89, 'L', 'Z', 'O'}, 4096);
  fake.header().pref_address = 0xffff'ffff'ffff'f000;
  fake.Commit();
  KernelImage kernel = KernelImage::FromBytes("bz", fake.bytes);
  auto guest = LoadGuest(*memory_, {&kernel, "", "", true, nullptr});
  ASSERT_FALSE(guest.ok());
  EXPECT_EQ(guest.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(guest.status().message().find("pref_address 0xfffffffffffff000"), std::string::npos)
      << guest.status();
}

TEST_F(GuestLoaderTest, KernelAlignmentThatIsNotAPowerOfTwoIsRejected) {
  testing::FakeBzImage fake({0x89, 'L', 'Z', 'O'}, 4096);
  fake.header().kernel_alignment = 0x300000;
  fake.Commit();
  KernelImage kernel = KernelImage::FromBytes("bz", fake.bytes);
  auto guest = LoadGuest(*memory_, {&kernel, "", "", true, nullptr});
  ASSERT_FALSE(guest.ok());
  EXPECT_EQ(guest.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(guest.status().message().find("not a power of two"), std::string::npos)
      << guest.status();
}

TEST_F(GuestLoaderTest, CommandLineLongerThanTheKernelAcceptsIsRejected) {
  testing::FakeBzImage fake({0x89, 'L', 'Z', 'O'}, 4096);
  fake.header().cmdline_size = 8;
  fake.Commit();
  KernelImage kernel = KernelImage::FromBytes("bz", fake.bytes);
  auto guest = LoadGuest(*memory_, {&kernel, "", "console=ttyS0", true, nullptr});
  ASSERT_FALSE(guest.ok());
  EXPECT_NE(guest.status().message().find("accepts at most 8"), std::string::npos);
}

TEST_F(GuestLoaderTest, InitrdGoesPageAlignedBelowInitrdAddrMax) {
  testing::FakeBzImage fake({0x89, 'L', 'Z', 'O'}, 4096);
  fake.header().initrd_addr_max = 48 * kMiB - 1;
  fake.Commit();
  KernelImage kernel = KernelImage::FromBytes("bz", fake.bytes);
  std::string initrd = testing::WriteTempFile("initrd", std::string(10000, 'i'));
  auto guest = LoadGuest(*memory_, {&kernel, initrd, "", true, nullptr});
  ASSERT_TRUE(guest.ok()) << guest.status();
  boot_params params = ZeroPage();
  EXPECT_EQ(params.hdr.ramdisk_size, 10000u);
  EXPECT_EQ(params.hdr.ramdisk_image % 4096, 0u);
  EXPECT_LE(params.hdr.ramdisk_image + 10000u, 48 * kMiB);
  EXPECT_GT(params.hdr.ramdisk_image, 48 * kMiB - 4 * 4096);
  auto byte = memory_->ReadObj<char>(params.hdr.ramdisk_image);
  ASSERT_TRUE(byte.ok());
  EXPECT_EQ(*byte, 'i');
}

TEST_F(GuestLoaderTest, InitrdLargerThanMemoryIsRejected) {
  testing::FakeBzImage fake({0x89, 'L', 'Z', 'O'}, 4096);
  KernelImage kernel = KernelImage::FromBytes("bz", fake.bytes);
  std::string initrd = testing::WriteTempFile("initrd", std::string(70 * kMiB, 'i'));
  auto guest = LoadGuest(*memory_, {&kernel, initrd, "", true, nullptr});
  ASSERT_FALSE(guest.ok());
  EXPECT_EQ(guest.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(guest.status().message().find("does not fit"), std::string::npos);
}

TEST_F(GuestLoaderTest, UnreadableInitrdIsNamed) {
  testing::FakeBzImage fake({0x89, 'L', 'Z', 'O'}, 4096);
  KernelImage kernel = KernelImage::FromBytes("bz", fake.bytes);
  auto guest = LoadGuest(*memory_, {&kernel, "/nonexistent/initrd", "", true, nullptr});
  ASSERT_FALSE(guest.ok());
  EXPECT_EQ(guest.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(guest.status().message().find("/nonexistent/initrd"), std::string::npos);
}

TEST_F(GuestLoaderTest, NeitherElfNorBzImageIsRejected) {
  KernelImage kernel = KernelImage::FromBytes("junk", std::vector<std::uint8_t>(8192, 'x'));
  auto guest = LoadGuest(*memory_, {&kernel, "", "", true, nullptr});
  ASSERT_FALSE(guest.ok());
  EXPECT_NE(guest.status().message().find("neither an ELF vmlinux nor a bzImage"),
            std::string::npos);
}

// A FIFO in a kernel's or an initrd's place used to block ember-vmm in open() for as long as no
// writer came (SIGTERM included); it is refused at once, like any other non-regular file.
TEST(KernelImageFile, AFifoIsRefusedWithoutWaitingForAWriter) {
  char dir[] = "/tmp/ember-kernel-fifo-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string fifo = std::string(dir) + "/vmlinux";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto kernel = KernelImage::FromFile(fifo);
  ::unlink(fifo.c_str());
  ::rmdir(dir);
  ASSERT_FALSE(kernel.ok());
  EXPECT_EQ(kernel.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(kernel.status().message().find("is not a regular file"), std::string::npos)
      << kernel.status();
}

}  // namespace
}  // namespace ember::vmm
