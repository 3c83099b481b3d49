// The test guest's virtio-blk driver against ember-vmm's block device on real KVM: the guest
// reads the pattern the test put on the disk, writes a second one, and the test checks the
// host file afterwards, on both I/O engines, through the page cache and with O_DIRECT.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <ostream>
#include <string>

#include "rootfs/testguest/blk_pattern.h"
#include "tests/support/files.h"
#include "tests/support/kvm_available.h"
#include "tests/support/process.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

// A disk image of BLK_DISK_SECTORS sectors holding the initial pattern.
std::string MakeImage() {
  std::string image;
  for (std::uint32_t s = 0; s < BLK_DISK_SECTORS; ++s) {
    for (std::uint32_t i = 0; i < BLK_SECTOR_SIZE; ++i) {
      image.push_back(static_cast<char>(blk_initial(s, i)));
    }
  }
  return WriteTempFile("disk.img", image);
}

using ::ember::testing::ReadFile;

struct Drive {
  std::string path;
  std::string engine = "Async";
  std::string cache = "Unsafe";
  bool read_only = false;
  bool direct_io = false;
};

ProcessResult RunGuest(const std::string& scenario, const Drive& drive) {
  const std::string config =
      R"({"boot-source": {"boot_args": "console=ttyS0 ember.test=)" + scenario +
      R"("}, "drives": [{"drive_id": ")" BLK_DRIVE_ID R"(", "path_on_host": ")" + drive.path +
      R"(", "is_root_device": false, "is_read_only": )" + (drive.read_only ? "true" : "false") +
      R"(, "io_engine": ")" + drive.engine + R"(", "cache_type": ")" + drive.cache +
      R"(", "direct_io": )" + (drive.direct_io ? "true" : "false") + R"(}]})";
  return RunProcess({BinPath("ember-vmm"), "--config", WriteTempFile("vm.json", config)},
                    seconds(120));
}

// Where the file differs from what the guest should have left: the written pattern in the
// written range, the initial pattern everywhere else. Empty when it matches.
std::string DiffFromExpected(const std::string& disk, bool written) {
  if (disk.size() != BLK_DISK_SECTORS * BLK_SECTOR_SIZE) {
    return "the image is " + std::to_string(disk.size()) + " bytes long";
  }
  for (std::uint32_t s = 0; s < BLK_DISK_SECTORS; ++s) {
    const bool in_range =
        written && s >= BLK_WRITE_FIRST && s < BLK_WRITE_FIRST + BLK_WRITE_SECTORS;
    for (std::uint32_t i = 0; i < BLK_SECTOR_SIZE; ++i) {
      const std::uint8_t want = in_range ? blk_written(s, i) : blk_initial(s, i);
      const auto got = static_cast<std::uint8_t>(disk[s * BLK_SECTOR_SIZE + i]);
      if (got != want) {
        return "sector " + std::to_string(s) + " byte " + std::to_string(i) + " is " +
               std::to_string(got) + ", expected " + std::to_string(want) +
               (in_range ? " (written pattern)" : " (initial pattern)");
      }
    }
  }
  return "";
}

struct EngineCase {
  const char* engine;
  const char* cache;
  bool direct_io = false;
};

// Names the case in CTest's test list instead of a byte dump.
void PrintTo(const EngineCase& c, std::ostream* os) {
  *os << c.engine << ' ' << c.cache << (c.direct_io ? " O_DIRECT" : "");
}

bool DirectIoWorks(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  if (fd >= 0) ::close(fd);
  return fd >= 0;
}

class VirtioBlkGuest : public ::testing::TestWithParam<EngineCase> {};

TEST_P(VirtioBlkGuest, GuestReadsTheImageAndTheFileHoldsExactlyWhatItWrote) {
  EMBER_REQUIRE_KVM();
  Drive drive{.path = MakeImage(),
              .engine = GetParam().engine,
              .cache = GetParam().cache,
              .direct_io = GetParam().direct_io};
  if (drive.direct_io && !DirectIoWorks(drive.path)) {
    GTEST_SKIP() << "the temporary directory's file system refuses O_DIRECT";
  }

  ProcessResult result = RunGuest("blk", drive);

  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("\nPASS blk\n"), std::string::npos) << result.out << result.err;
  // FLUSH is offered, and so sent, exactly when the cache is write-back.
  const bool flushed = result.out.find("blk: flushed\n") != std::string::npos;
  EXPECT_EQ(flushed, std::string(GetParam().cache) == "Writeback") << result.out;
  EXPECT_EQ(DiffFromExpected(ReadFile(drive.path), /*written=*/true), "");
}

INSTANTIATE_TEST_SUITE_P(
    Engines, VirtioBlkGuest,
    ::testing::Values(EngineCase{"Async", "Writeback"}, EngineCase{"Async", "Unsafe"},
                      EngineCase{"Sync", "Writeback"}, EngineCase{"Sync", "Unsafe"},
                      EngineCase{"Async", "Writeback", /*direct_io=*/true},
                      EngineCase{"Sync", "Unsafe", /*direct_io=*/true}),
    [](const auto& test) {
      return std::string(test.param.engine) + test.param.cache +
             (test.param.direct_io ? "Direct" : "");
    });

TEST(VirtioBlkGuestReadOnly, WritesFailWithIoErrAndTheFileIsUnchanged) {
  EMBER_REQUIRE_KVM();
  Drive drive{.path = MakeImage(), .read_only = true};

  ProcessResult result = RunGuest("blk-ro", drive);

  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("\nPASS blk-ro\n"), std::string::npos) << result.out << result.err;
  EXPECT_EQ(DiffFromExpected(ReadFile(drive.path), /*written=*/false), "");
}

// A driver reset with reads in flight (O_DIRECT: they wait for the host's disk), under the
// enforced seccomp filters: ember-vmm waits for them on the resetting vCPU, reports none of
// them into the new queue and serves it.
TEST(VirtioBlkGuestReset, ResetWithReadsInFlightKeepsTheVmAndTheDevice) {
  EMBER_REQUIRE_KVM();
  Drive drive{.path = MakeImage(), .direct_io = true};
  if (!DirectIoWorks(drive.path)) {
    GTEST_SKIP() << "the temporary directory's file system refuses O_DIRECT";
  }

  ProcessResult result = RunGuest("blk-reset", drive);

  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("\nPASS blk-reset\n"), std::string::npos) << result.out << result.err;
  EXPECT_EQ(DiffFromExpected(ReadFile(drive.path), /*written=*/false), "");
}

// The guest's checks can fail: a disk holding something else than the pattern is reported.
TEST(VirtioBlkGuestChecks, DiskWithoutThePatternIsReportedAsFailed) {
  EMBER_REQUIRE_KVM();
  Drive drive{
      .path = WriteTempFile("zeros.img", std::string(BLK_DISK_SECTORS * BLK_SECTOR_SIZE, '\0')),
      .read_only = true};

  ProcessResult result = RunGuest("blk-ro", drive);

  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("\nFAIL blk-ro read data is not the image's\n"), std::string::npos)
      << result.out;
}

}  // namespace
}  // namespace ember::testing
