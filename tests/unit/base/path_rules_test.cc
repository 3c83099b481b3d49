#include "vmm/base/path_rules.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/support/files.h"

namespace ember::base {
namespace {

// <temp>/allowed is the one allowed directory; <temp>/outside holds a root-only file.
class PathRulesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(allowed_ + "/images");
    std::filesystem::create_directories(outside_);
    std::ofstream(allowed_ + "/images/disk.img") << "disk";
    std::ofstream(secret_) << "secret";
    ASSERT_EQ(::chmod(secret_.c_str(), 0600), 0);
    auto rules = PathRules::Open({allowed_});
    ASSERT_TRUE(rules.ok()) << rules.status();
    rules_ = std::move(*rules);
  }

  // Asserts `path` is refused as INVALID_ARGUMENT naming the field and the rule.
  void ExpectRefused(const std::string& path, const std::string& why) {
    absl::Status status = rules_.Check("config.drives[0].path_on_host", path);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << path << ": " << status;
    EXPECT_NE(status.message().find("config.drives[0].path_on_host: " + path), std::string::npos)
        << status;
    EXPECT_NE(status.message().find(why), std::string::npos) << status;
    EXPECT_NE(status.message().find("--allow-dir: " + allowed_), std::string::npos) << status;
  }

  testing::ScopedTempDir temp_{"ember-path-rules"};
  const std::string allowed_ = temp_.path() + "/allowed";
  const std::string outside_ = temp_.path() + "/outside";
  const std::string secret_ = outside_ + "/secret";
  PathRules rules_;
};

TEST_F(PathRulesTest, AFileInsideAnAllowedDirectoryPasses) {
  EXPECT_TRUE(rules_.Check("f", allowed_ + "/images/disk.img").ok());
}

TEST_F(PathRulesTest, ARootOnlyFileOutsideIsRefused) {
  ExpectRefused(secret_, "outside the allowed directories");
  ExpectRefused("/etc/shadow", "outside the allowed directories");
}

TEST_F(PathRulesTest, ARootOnlyFileInsideIsAllowedTheRuleIsWhereNotWho) {
  const std::string inside = allowed_ + "/images/root-only.img";
  std::ofstream(inside) << "x";
  ASSERT_EQ(::chmod(inside.c_str(), 0600), 0);
  EXPECT_TRUE(rules_.Check("f", inside).ok());
}

TEST_F(PathRulesTest, DotDotIsRefusedEvenWhenItStaysInside) {
  ExpectRefused(allowed_ + "/../outside/secret", "contains \"..\"");
  ExpectRefused(allowed_ + "/images/../images/disk.img", "contains \"..\"");
  ExpectRefused(allowed_ + "/missing/../../outside/new", "contains \"..\"");
}

TEST_F(PathRulesTest, ASymlinkInsidePointingOutIsRefused) {
  std::filesystem::create_symlink(secret_, allowed_ + "/absolute-out");
  std::filesystem::create_symlink("../outside/secret", allowed_ + "/relative-out");
  std::filesystem::create_symlink(outside_, allowed_ + "/dir-out");
  ExpectRefused(allowed_ + "/absolute-out", "leads out of " + allowed_);
  ExpectRefused(allowed_ + "/relative-out", "leads out of " + allowed_);
  ExpectRefused(allowed_ + "/dir-out/secret", "leads out of " + allowed_);
  // A file to be created through a symlinked directory lands outside just the same.
  ExpectRefused(allowed_ + "/dir-out/new.log", "leads out of " + allowed_);
}

TEST_F(PathRulesTest, ADanglingSymlinkPointingOutIsRefused) {
  std::filesystem::create_symlink(outside_ + "/not-yet", allowed_ + "/metrics.json");
  ExpectRefused(allowed_ + "/metrics.json", "leads out of " + allowed_);
}

TEST_F(PathRulesTest, ASymlinkInsidePointingInsidePasses) {
  std::filesystem::create_symlink("images/disk.img", allowed_ + "/current.img");
  std::filesystem::create_symlink(allowed_ + "/images", allowed_ + "/latest");
  EXPECT_FALSE(rules_.Check("f", allowed_ + "/latest/disk.img").ok())
      << "an absolute symlink, even to inside, is refused: RESOLVE_BENEATH cannot follow it";
  EXPECT_TRUE(rules_.Check("f", allowed_ + "/current.img").ok());
}

TEST_F(PathRulesTest, AMagicLinkIsRefused) {
  // /proc/self/fd/N inside an allowed tree would reopen whatever emberd holds.
  auto rules = PathRules::Open({"/proc/self"});
  ASSERT_TRUE(rules.ok()) << rules.status();
  absl::Status status = rules->Check("f", "/proc/self/exe");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("magic link"), std::string::npos) << status;
}

TEST_F(PathRulesTest, APathNotYetCreatedPassesWhenItsParentIsInside) {
  EXPECT_TRUE(rules_.Check("f", allowed_ + "/logs/vm1/ember.log").ok());
  EXPECT_TRUE(rules_.Check("f", allowed_).ok());
}

TEST_F(PathRulesTest, APrefixThatIsNotADirectoryBoundaryIsOutside) {
  std::filesystem::create_directories(allowed_ + "2");
  std::ofstream(allowed_ + "2/disk.img") << "x";
  ExpectRefused(allowed_ + "2/disk.img", "outside the allowed directories");
}

TEST_F(PathRulesTest, ARelativePathIsRefused) {
  ExpectRefused("images/disk.img", "is not an absolute path");
}

// The race of issue 21: a name checked, then swapped for a symlink out before it is opened.
// What OpenFile returns is the file that passed, reopened through /proc as a VMM does.
TEST_F(PathRulesTest, OpenFileHoldsTheFileThatPassedWhenItsNameIsSwappedForASymlinkOut) {
  const std::string disk = allowed_ + "/images/disk.img";
  auto file = rules_.OpenFile("config.drives[0].path_on_host", disk);
  ASSERT_TRUE(file.ok()) << file.status();
  const std::string swapped = allowed_ + "/images/swap";
  ASSERT_EQ(::symlink(secret_.c_str(), swapped.c_str()), 0);
  ASSERT_EQ(::rename(swapped.c_str(), disk.c_str()), 0);
  ASSERT_EQ(testing::ReadFile(disk), "secret");  // the name leads out now
  EXPECT_EQ(testing::ReadFile("/proc/self/fd/" + std::to_string(file->Get())), "disk");
}

TEST_F(PathRulesTest, OpenFileRefusesAMissingFileAndASymlinkOut) {
  absl::Status missing = rules_.OpenFile("kernel", allowed_ + "/images/none").status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(missing.message().find("does not exist"), std::string::npos) << missing;
  const std::string link = allowed_ + "/images/out";
  ASSERT_EQ(::symlink(secret_.c_str(), link.c_str()), 0);
  absl::Status out = rules_.OpenFile("kernel", link).status();
  EXPECT_EQ(out.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out.message().find("leads out of"), std::string::npos) << out;
}

// Opening a FIFO to read blocks until a writer comes: in the fork server that would stall every
// later launch. Refused at the check instead, as are an empty name and a directory.
TEST_F(PathRulesTest, OpenFileRefusesAFifoADirectoryAndAnEmptyPath) {
  const std::string fifo = allowed_ + "/images/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  absl::Status fifo_status = rules_.OpenFile("boot_source.kernel_image_path", fifo).status();
  EXPECT_EQ(fifo_status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(fifo_status.message().find("not a regular file or a block device"),
            std::string::npos)
      << fifo_status;
  EXPECT_EQ(rules_.OpenFile("kernel", allowed_ + "/images").status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status empty = rules_.OpenFile("overrides.drive_path_on_host[rootfs]", "").status();
  EXPECT_EQ(empty.code(), absl::StatusCode::kInvalidArgument) << empty;
}

// A socket or metrics file made later by name: made in the directory that passed, not where
// its parent's name leads once it is swapped for a symlink out.
TEST_F(PathRulesTest, OpenPlaceHoldsTheDirectoryThatPassedWhenItsNameIsSwappedForASymlinkOut) {
  auto place = rules_.OpenPlace("config.vsock.uds_path", allowed_ + "/images/v.sock");
  ASSERT_TRUE(place.ok()) << place.status();
  EXPECT_EQ(place->name, "v.sock");
  ASSERT_EQ(::rename((allowed_ + "/images").c_str(), (allowed_ + "/checked").c_str()), 0);
  ASSERT_EQ(::symlink(outside_.c_str(), (allowed_ + "/images").c_str()), 0);
  const std::string made =
      "/proc/self/fd/" + std::to_string(place->dir.Get()) + "/" + place->name;
  std::ofstream(made) << "made";
  EXPECT_EQ(testing::ReadFile(allowed_ + "/checked/v.sock"), "made");
  EXPECT_FALSE(std::filesystem::exists(outside_ + "/v.sock"));
}

TEST_F(PathRulesTest, OpenPlaceRefusesAParentOutsideMissingOrNotADirectory) {
  ASSERT_EQ(::symlink(outside_.c_str(), (allowed_ + "/out").c_str()), 0);
  EXPECT_EQ(rules_.OpenPlace("f", allowed_ + "/out/v.sock").status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status missing = rules_.OpenPlace("f", allowed_ + "/none/v.sock").status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(missing.message().find("its directory cannot be used"), std::string::npos) << missing;
  EXPECT_EQ(rules_.OpenPlace("f", allowed_ + "/images/disk.img/v.sock").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rules_.OpenPlace("f", allowed_ + "/images/").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(PathRulesTest, OpenAppendFileMakesAMissingFileAndAppendsToItsOwn) {
  const std::string log = allowed_ + "/images/vm.log";
  std::ofstream(log) << "old\n";
  auto file = rules_.OpenAppendFile("config.logger.log_path", log);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(::write(file->Get(), "new\n", 4), 4);
  EXPECT_EQ(testing::ReadFile(log), "old\nnew\n");
  auto made = rules_.OpenAppendFile("config.logger.log_path", allowed_ + "/images/new.log");
  ASSERT_TRUE(made.ok()) << made.status();
  struct stat st {};
  ASSERT_EQ(::fstat(made->Get(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

// A log named by an API client is appended to by root: never through a symlink (even one that
// stays inside), never into a FIFO (the open would block, and a FIFO is no log), never into a
// hard link to someone's file.
TEST_F(PathRulesTest, OpenAppendFileRefusesASymlinkAFifoAndAHardLink) {
  const std::string link = allowed_ + "/images/link.log";
  ASSERT_EQ(::symlink("disk.img", link.c_str()), 0);
  absl::Status symlink = rules_.OpenAppendFile("config.logger.log_path", link).status();
  EXPECT_EQ(symlink.code(), absl::StatusCode::kInvalidArgument) << symlink;
  EXPECT_NE(symlink.message().find("config.logger.log_path: " + link), std::string::npos)
      << symlink;
  EXPECT_EQ(testing::ReadFile(allowed_ + "/images/disk.img"), "disk");
  const std::string fifo = allowed_ + "/images/fifo.log";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(rules_.OpenAppendFile("config.logger.log_path", fifo).status().code(),
            absl::StatusCode::kInvalidArgument);
  // With a reader, a FIFO opens without blocking: refused as no regular file.
  base::UniqueFd reader(::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  ASSERT_TRUE(reader);
  EXPECT_EQ(rules_.OpenAppendFile("config.logger.log_path", fifo).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::string hard = allowed_ + "/images/hard.log";
  ASSERT_EQ(::link((allowed_ + "/images/disk.img").c_str(), hard.c_str()), 0);
  EXPECT_EQ(rules_.OpenAppendFile("config.logger.log_path", hard).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(testing::ReadFile(allowed_ + "/images/disk.img"), "disk");
}

TEST_F(PathRulesTest, OpenAppendFileRefusesAnotherUsersFile) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a file to another user";
  const std::string log = allowed_ + "/images/nobody.log";
  std::ofstream(log) << "theirs";
  ASSERT_EQ(::chown(log.c_str(), 65534, 65534), 0);
  absl::Status refused = rules_.OpenAppendFile("config.logger.log_path", log).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
  EXPECT_EQ(testing::ReadFile(log), "theirs");
}

// emberd's own function images: reached only to be read, and only by OpenReadOnlyFile.
TEST_F(PathRulesTest, AReadOnlyDirectoryIsReachedOnlyByOpenReadOnlyFile) {
  const std::string images = temp_.path() + "/fn-images";
  std::filesystem::create_directories(images);
  std::ofstream(images + "/root.img") << "image";
  auto rules =
      PathRules::Open({allowed_}, "emberd", {{images, PathRules::OwnDir::Use::kReadOnlyFiles}});
  ASSERT_TRUE(rules.ok()) << rules.status();
  const std::string image = images + "/root.img";
  absl::StatusOr<UniqueFd> read = rules->OpenReadOnlyFile("drive", image);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(testing::ReadFile("/proc/self/fd/" + std::to_string(read->Get())), "image");
  EXPECT_EQ(rules->OpenFile("drive", image).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rules->Check("drive", image).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rules->OpenPlace("vsock", images + "/v.sock").status().code(),
            absl::StatusCode::kInvalidArgument);
  // What emberd hands a restoring ember-vmm as its --allow-dir, and names in messages.
  EXPECT_EQ(rules->Dirs(), std::vector<std::string>{allowed_});
  EXPECT_EQ(rules->Describe(), allowed_);
  // The client's directories are reached by both.
  EXPECT_TRUE(rules->OpenReadOnlyFile("drive", allowed_ + "/images/disk.img").ok());
  EXPECT_TRUE(rules->OpenFile("drive", allowed_ + "/images/disk.img").ok());
}

// Where emberd has its function VMs make their sockets: reached only by OpenPlace.
TEST_F(PathRulesTest, AnOwnPlacesDirectoryIsReachedOnlyByOpenPlace) {
  const std::string own = temp_.path() + "/fn";
  std::filesystem::create_directories(own);
  std::ofstream(own + "/record") << "record";
  auto rules = PathRules::Open({allowed_}, "emberd", {{own, PathRules::OwnDir::Use::kPlaces}});
  ASSERT_TRUE(rules.ok()) << rules.status();
  absl::StatusOr<PathRules::Place> place = rules->OpenPlace("vsock", own + "/agent.sock");
  ASSERT_TRUE(place.ok()) << place.status();
  EXPECT_EQ(place->name, "agent.sock");
  EXPECT_EQ(rules->Check("vsock", own + "/agent.sock").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rules->OpenFile("drive", own + "/record").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rules->OpenReadOnlyFile("drive", own + "/record").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rules->Dirs(), std::vector<std::string>{allowed_});
}

TEST(PathRules, WithNoAllowedDirectoryEverythingIsRefused) {
  auto rules = PathRules::Open({});
  ASSERT_TRUE(rules.ok()) << rules.status();
  absl::Status status = rules->Check("snapshot_dir", "/tmp/x");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("--allow-dir: none"), std::string::npos) << status;
}

TEST(PathRules, AMissingOrRelativeAllowedDirectoryIsRefusedAtStartUp) {
  EXPECT_EQ(PathRules::Open({"/nonexistent/ember"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PathRules::Open({"srv/ember"}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ember::base
