// Snapshot files on disk — state, working-set and memory files — written and read without KVM.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <thread>
#include <vector>

#include "snapshot/file_codec.h"
#include "snapshot/memory_file.h"
#include "snapshot/snapshot_id.h"
#include "snapshot/state_file.h"
#include "snapshot/working_set.h"
#include "tests/support/files.h"
#include "tests/support/process.h"

namespace ember::snapshot {
namespace {

using ::ember::testing::ReadFile;

class SnapshotFilesTest : public ::testing::Test {
 protected:
  ::ember::testing::ScopedTempDir temp_{"ember-snapshot-files-test"};
  const std::string dir_ = temp_.path();
};

WorkingSet SetOf(std::uint64_t first_page, std::uint64_t pages) {
  WorkingSet set;
  set.memory_size = 1 << 30;
  set.memory_fingerprint = 42;
  set.runs.push_back({first_page, pages});
  return set;
}

TEST_F(SnapshotFilesTest, WorkingSetWriteLeavesAnotherWritersTemporaryFileAlone) {
  std::string path = dir_ + "/mem.ws";
  std::ofstream(path + ".tmp") << "another clone's set, half written";
  ASSERT_TRUE(WriteWorkingSetFile(path, SetOf(1, 2)).ok());
  EXPECT_EQ(ReadFile(path + ".tmp"), "another clone's set, half written");
  auto set = ReadWorkingSetFile(path, 1 << 30, 42);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->runs, SetOf(1, 2).runs);
}

constexpr std::uint64_t kPage = 4096;
const std::vector<base::GuestMemory::Range> kRanges = {{0, 16 * kPage}};

// Guest memory whose every byte is `fill`.
base::GuestMemory FilledMemory(char fill) {
  auto memory = base::GuestMemory::Create(kRanges);
  EXPECT_TRUE(memory.ok()) << memory.status();
  std::vector<std::uint8_t> bytes(16 * kPage, static_cast<std::uint8_t>(fill));
  EXPECT_TRUE(memory->Write(0, bytes).ok());
  return std::move(*memory);
}

// The memory a memory file holds: all of it but its trailer.
std::string MemoryIn(const std::string& path) {
  std::string bytes = ReadFile(path);
  EXPECT_EQ(bytes.size(), 16 * kPage + kMemoryTrailerSize) << path;
  return bytes.substr(0, 16 * kPage);
}

// What the guest sees in `memory`, read through the accessors.
std::string Contents(const base::GuestMemory& memory) {
  std::string bytes(16 * kPage, '\0');
  // Guest bytes as chars, to compare as a string.
  EXPECT_TRUE(memory.Read(0, {reinterpret_cast<std::uint8_t*>(bytes.data()), bytes.size()}).ok());
  return bytes;
}

// A memory file mapped as a restore maps it.
absl::StatusOr<base::GuestMemory> MapMemoryFile(const MemoryFileRef& file) {
  auto fd = OpenMemoryFile(file, 16 * kPage);
  if (!fd.ok()) return fd.status();
  return base::GuestMemory::MapFile(std::move(*fd), file.path, kRanges);
}

// A snapshot taken while clones run from the previous one at the same path.
TEST_F(SnapshotFilesTest, RewritingAMemoryFileLeavesAClonesMemoryIntact) {
  std::string path = dir_ + "/vm.mem";
  std::string id = NewSnapshotId();
  ASSERT_TRUE(WriteMemoryFile(FilledMemory('a'), path, id).ok());
  auto clone = MapMemoryFile({path, id});  // MAP_PRIVATE, nothing loaded yet
  ASSERT_TRUE(clone.ok()) << clone.status();

  ASSERT_TRUE(WriteMemoryFile(FilledMemory('b'), path, NewSnapshotId()).ok());

  EXPECT_EQ(Contents(*clone), std::string(16 * kPage, 'a'));
  EXPECT_EQ(MemoryIn(path), std::string(16 * kPage, 'b'));
}

TEST_F(SnapshotFilesTest, RewritingADiffMemoryFileLeavesAClonesMemoryIntact) {
  std::string path = dir_ + "/vm.mem";
  std::vector<std::uint64_t> all_dirty(1, 0xffff);
  std::string id = NewSnapshotId();
  ASSERT_TRUE(WriteDiffMemoryFile(FilledMemory('a'), all_dirty, path, id).ok());
  auto clone = MapMemoryFile({path, id});
  ASSERT_TRUE(clone.ok()) << clone.status();

  ASSERT_TRUE(WriteDiffMemoryFile(FilledMemory('b'), all_dirty, path, NewSnapshotId()).ok());

  EXPECT_EQ(Contents(*clone), std::string(16 * kPage, 'a'));
}

// A VM restored from M snapshots to M: its untouched pages are still only in M.
TEST_F(SnapshotFilesTest, AVmRestoredFromAMemoryFileCanSnapshotIntoIt) {
  std::string path = dir_ + "/vm.mem";
  std::string id = NewSnapshotId();
  ASSERT_TRUE(WriteMemoryFile(FilledMemory('a'), path, id).ok());
  auto restored = MapMemoryFile({path, id});
  ASSERT_TRUE(restored.ok()) << restored.status();
  std::vector<std::uint8_t> page(kPage, 'z');
  ASSERT_TRUE(restored->Write(3 * kPage, page).ok());

  ASSERT_TRUE(WriteMemoryFile(*restored, path, NewSnapshotId()).ok());

  std::string expected(16 * kPage, 'a');
  expected.replace(3 * kPage, kPage, kPage, 'z');
  EXPECT_EQ(MemoryIn(path), expected);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_),
                          std::filesystem::directory_iterator()),
            1)
      << "temporary files left behind";
}

// A base memory file of 'a's and a diff that changed page 3 to 'z', as files in `dir`.
struct Chain {
  std::string base;
  std::string diff;
  std::string state;  // the diff's state file, naming `base` as its base
  std::string base_id;
  std::string diff_id;

  [[nodiscard]] std::vector<MemoryFileRef> Refs() const {
    return {{base, base_id}, {diff, diff_id}};
  }
};

Chain WriteChain(const std::string& dir) {
  Chain chain{dir + "/base.mem", dir + "/diff.mem", dir + "/diff.state", NewSnapshotId(),
              NewSnapshotId()};
  EXPECT_TRUE(WriteMemoryFile(FilledMemory('a'), chain.base, chain.base_id).ok());
  base::GuestMemory later = FilledMemory('a');
  std::vector<std::uint8_t> page(kPage, 'z');
  EXPECT_TRUE(later.Write(3 * kPage, page).ok());
  std::vector<std::uint64_t> dirty(1, 1u << 3);
  EXPECT_TRUE(WriteDiffMemoryFile(later, dirty, chain.diff, chain.diff_id).ok());
  v1::SnapshotState state;
  state.set_kind(v1::SnapshotState::DIFF);
  state.set_snapshot_id(chain.diff_id);
  state.add_base_memory_files(chain.base);
  state.add_base_memory_ids(chain.base_id);
  state.set_memory_file_size(16 * kPage);
  EXPECT_TRUE(WriteStateFile(chain.state, state).ok());
  return chain;
}

std::string MergedContents() {
  std::string merged(16 * kPage, 'a');
  merged.replace(3 * kPage, kPage, kPage, 'z');
  return merged;
}

TEST_F(SnapshotFilesTest, MergeLaysTheDiffOverItsBase) {
  Chain chain = WriteChain(dir_);
  std::string id = NewSnapshotId();
  ASSERT_TRUE(MergeMemoryFiles(chain.Refs(), 16 * kPage, dir_ + "/merged.mem", id).ok());
  EXPECT_EQ(MemoryIn(dir_ + "/merged.mem"), MergedContents());
  EXPECT_TRUE(CheckMemoryFile({dir_ + "/merged.mem", id}, 16 * kPage).ok());
}

TEST_F(SnapshotFilesTest, MergeIntoItsOwnBaseIsRefusedAndTheBaseKept) {
  Chain chain = WriteChain(dir_);
  absl::Status status = MergeMemoryFiles(chain.Refs(), 16 * kPage, chain.base, NewSnapshotId());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(MemoryIn(chain.base), std::string(16 * kPage, 'a'));
}

// The same file under another name is the same file.
TEST_F(SnapshotFilesTest, MergeIntoAHardLinkOfAnInputIsRefused) {
  Chain chain = WriteChain(dir_);
  ASSERT_EQ(::link(chain.diff.c_str(), (dir_ + "/alias.mem").c_str()), 0);
  absl::Status status =
      MergeMemoryFiles(chain.Refs(), 16 * kPage, dir_ + "/alias.mem", NewSnapshotId());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

class MergeToolTest : public SnapshotFilesTest {
 protected:
  testing::ProcessResult Merge(const Chain& chain, const std::string& out_state,
                               const std::string& out_mem) {
    return testing::RunProcess({testing::BinPath("ember-snapshot"), "merge", "--state",
                                chain.state, "--mem", chain.diff, "--out-state", out_state,
                                "--out-mem", out_mem});
  }
};

TEST_F(MergeToolTest, HelpGoesToStdoutWithExitCodeZeroAndNoArgumentsIsAnError) {
  testing::ProcessResult help = testing::RunProcess({testing::BinPath("ember-snapshot"), "--help"});
  EXPECT_EQ(help.exit_code, 0) << help.err;
  EXPECT_NE(help.out.find("usage: ember-snapshot merge"), std::string::npos) << help.out;
  testing::ProcessResult bare = testing::RunProcess({testing::BinPath("ember-snapshot")});
  EXPECT_EQ(bare.exit_code, 2);
  EXPECT_NE(bare.err.find("usage: ember-snapshot merge"), std::string::npos) << bare.err;
}

TEST_F(MergeToolTest, MergeIntoNewFilesWritesAFullSnapshot) {
  Chain chain = WriteChain(dir_);
  testing::ProcessResult result = Merge(chain, dir_ + "/full.state", dir_ + "/full.mem");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(MemoryIn(dir_ + "/full.mem"), MergedContents());
  auto state = ReadStateFile(dir_ + "/full.state");
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->kind(), v1::SnapshotState::FULL);
  EXPECT_EQ(state->base_memory_files_size(), 0);
  EXPECT_EQ(state->base_memory_ids_size(), 0);
  // A snapshot of its own: neither input's id.
  EXPECT_NE(state->snapshot_id(), chain.diff_id);
  EXPECT_TRUE(CheckMemoryFile({dir_ + "/full.mem", state->snapshot_id()}, 16 * kPage).ok());
}

TEST_F(MergeToolTest, OutMemThatIsTheBaseIsRefusedAndNothingChanges) {
  Chain chain = WriteChain(dir_);
  std::string state_before = ReadFile(chain.state);
  testing::ProcessResult result = Merge(chain, dir_ + "/full.state", chain.base);
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("--out-mem"), std::string::npos) << result.err;
  EXPECT_EQ(MemoryIn(chain.base), std::string(16 * kPage, 'a'));
  EXPECT_EQ(ReadFile(chain.state), state_before);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/full.state"));
}

TEST_F(MergeToolTest, OutStateThatIsTheDiffsStateIsRefusedAndNothingChanges) {
  Chain chain = WriteChain(dir_);
  std::string state_before = ReadFile(chain.state);
  testing::ProcessResult result = Merge(chain, chain.state, dir_ + "/full.mem");
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("--out-state"), std::string::npos) << result.err;
  EXPECT_EQ(ReadFile(chain.state), state_before);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/full.mem"));
}

TEST_F(MergeToolTest, OutStateThatIsOutMemIsRefused) {
  Chain chain = WriteChain(dir_);
  testing::ProcessResult result = Merge(chain, dir_ + "/full", dir_ + "/./full");
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find("--out-state"), std::string::npos) << result.err;
}

// Bytes this process has read through read-like calls so far (/proc/self/io's rchar).
std::uint64_t BytesReadSoFar() {
  std::ifstream io("/proc/self/io");
  std::string key;
  std::uint64_t value = 0;
  while (io >> key >> value) {
    if (key == "rchar:") return value;
  }
  ADD_FAILURE() << "no rchar in /proc/self/io";
  return 0;
}

// Expects `read` to fail with a message holding `expected` after reading less than 1 MiB.
template <typename Read>
void ExpectRefusedUnread(Read read, const std::string& expected) {
  std::uint64_t before = BytesReadSoFar();
  absl::Status status = read().status();
  EXPECT_LT(BytesReadSoFar() - before, 1u << 20);
  EXPECT_NE(status.message().find(expected), std::string::npos) << status;
}

// A sparse file of `size` bytes beginning with `head`.
std::string SparseFile(const std::string& path, const std::string& head, std::uint64_t size) {
  std::ofstream(path, std::ios::binary) << head;
  EXPECT_EQ(::truncate(path.c_str(), static_cast<off_t>(size)), 0);
  return path;
}

constexpr std::uint64_t kBigFile = 256ull << 20;

// --restore-from and --restore-mem swapped.
TEST_F(SnapshotFilesTest, AMemoryFileReadAsAStateFileIsRefusedWithoutBeingRead) {
  std::string memory = SparseFile(dir_ + "/vm.mem", "", kBigFile);
  ExpectRefusedUnread([&] { return ReadStateFile(memory); }, "wrong magic");
}

TEST_F(SnapshotFilesTest, StateHeaderAnnouncingAnOversizedPayloadIsRefusedWithoutReadingIt) {
  std::string header(kMagic, sizeof(kMagic));
  const std::uint32_t version_and_reserved[2] = {kFormatVersion, 0};
  header.append(reinterpret_cast<const char*>(version_and_reserved), 8);  // little-endian
  std::uint64_t length = kBigFile;
  header.append(reinterpret_cast<const char*>(&length), sizeof(length));  // little-endian
  std::string path = SparseFile(dir_ + "/vm.state", header, 24 + length + 8);
  ExpectRefusedUnread([&] { return ReadStateFile(path); }, "announces");
}

TEST_F(SnapshotFilesTest, AMemoryFileReadAsAWorkingSetIsRefusedWithoutBeingRead) {
  std::string memory = SparseFile(dir_ + "/vm.mem", "", kBigFile);
  ExpectRefusedUnread([&] { return ReadWorkingSetFile(memory, kBigFile, 1); }, "wrong magic");
}

TEST_F(SnapshotFilesTest, StateFileRoundTripsThroughTheHeaderFirstRead) {
  v1::SnapshotState state;
  state.set_snapshot_id(NewSnapshotId());
  state.set_memory_file_size(12345);
  ASSERT_TRUE(WriteStateFile(dir_ + "/vm.state", state).ok());
  auto read = ReadStateFile(dir_ + "/vm.state");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->memory_file_size(), 12345u);
}

TEST_F(SnapshotFilesTest, TruncatedStateFileIsRefused) {
  v1::SnapshotState state;
  state.set_memory_file_size(12345);
  std::string bytes = EncodeState(state);
  std::string path = dir_ + "/vm.state";
  std::ofstream(path, std::ios::binary) << bytes.substr(0, bytes.size() - 3);
  auto read = ReadStateFile(path);
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find("truncated"), std::string::npos) << read.status();
  EXPECT_NE(read.status().message().find(path), std::string::npos) << read.status();
}

// The bytes of `state` as this Ember frames them, then bent by `edit` and given a right CRC
// again, as a crafted file would be.
std::string Reframed(const v1::SnapshotState& state,
                     const std::function<void(std::string&)>& edit) {
  std::string bytes = EncodeState(state);
  edit(bytes);
  bytes.resize(bytes.size() - kCrcSize);
  PutLittleEndian<std::uint64_t>(bytes, Crc64(bytes, bytes.size()));
  return bytes;
}

v1::SnapshotState SmallState() {
  v1::SnapshotState state;
  state.set_snapshot_id(NewSnapshotId());
  state.set_memory_file_size(16 * kPage);
  return state;
}

absl::Status ReadStateBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
  return ReadStateFile(path).status();
}

TEST_F(SnapshotFilesTest, StateFileOfThePreviousFormatIsRefusedAsAnOlderEmbers) {
  const std::uint32_t previous = kFormatVersion - 1;
  std::string bytes =
      Reframed(SmallState(), [&](std::string& b) { b[8] = static_cast<char>(previous); });
  absl::Status status = ReadStateBytes(dir_ + "/vm.state", bytes);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("format version " + std::to_string(previous) +
                                  " is not supported (this Ember reads version " +
                                  std::to_string(kFormatVersion) +
                                  "); it was written by an older Ember: take it again"),
            std::string::npos)
      << status;
}

TEST_F(SnapshotFilesTest, StateFileWithANonZeroReservedWordIsRefused) {
  std::string bytes = Reframed(SmallState(), [](std::string& b) { b[13] = 1; });
  absl::Status status = ReadStateBytes(dir_ + "/vm.state", bytes);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("the reserved header word is 256, not 0"), std::string::npos)
      << status;
}

TEST_F(SnapshotFilesTest, StateFileWithoutASnapshotIdIsRefused) {
  v1::SnapshotState state = SmallState();
  state.clear_snapshot_id();
  absl::Status status = ReadStateBytes(dir_ + "/vm.state", EncodeState(state));
  EXPECT_NE(status.message().find("the snapshot id is 0 bytes, not 16"), std::string::npos)
      << status;
}

TEST_F(SnapshotFilesTest, DiffStateWithoutAnIdForEachBaseIsRefused) {
  v1::SnapshotState state = SmallState();
  state.set_kind(v1::SnapshotState::DIFF);
  state.add_base_memory_files(dir_ + "/base.mem");
  absl::Status status = ReadStateBytes(dir_ + "/vm.state", EncodeState(state));
  EXPECT_NE(status.message().find("names 1 base memory files and 0 ids"), std::string::npos)
      << status;
}

// A memory file as the previous format wrote it: the guest memory and nothing after it.
TEST_F(SnapshotFilesTest, MemoryFileOfThePreviousFormatIsRefusedAsAnOlderEmbers) {
  std::string path = SparseFile(dir_ + "/vm.mem", "", 16 * kPage);
  absl::Status status = CheckMemoryFile({path, NewSnapshotId()}, 16 * kPage);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find(path), std::string::npos) << status;
  EXPECT_NE(status.message().find("it has no trailer: an older Ember's memory file"),
            std::string::npos)
      << status;
}

TEST_F(SnapshotFilesTest, MemoryFileOfAnotherSnapshotIsRefusedNamingBothIds) {
  std::string path = dir_ + "/vm.mem";
  std::string written = NewSnapshotId(), expected = NewSnapshotId();
  ASSERT_TRUE(WriteMemoryFile(FilledMemory('a'), path, written).ok());
  absl::Status status = CheckMemoryFile({path, expected}, 16 * kPage);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("snapshot memory file " + path + " belongs to snapshot " +
                                  SnapshotIdText(written) + ", not to snapshot " +
                                  SnapshotIdText(expected)),
            std::string::npos)
      << status;
  EXPECT_TRUE(CheckMemoryFile({path, written}, 16 * kPage).ok());
}

TEST_F(SnapshotFilesTest, MemoryFileWithACorruptedTrailerIsRefused) {
  std::string path = dir_ + "/vm.mem";
  std::string id = NewSnapshotId();
  ASSERT_TRUE(WriteMemoryFile(FilledMemory('a'), path, id).ok());
  std::string bytes = ReadFile(path);
  bytes[16 * kPage + 30] ^= 1;  // inside the id
  std::ofstream(path, std::ios::binary) << bytes;
  absl::Status status = CheckMemoryFile({path, id}, 16 * kPage);
  EXPECT_NE(status.message().find("CRC mismatch in its trailer"), std::string::npos) << status;
}

// A later full snapshot to the same path replaced the base a diff was taken on.
TEST_F(MergeToolTest, DiffWhoseBaseWasReplacedByALaterSnapshotIsRefused) {
  Chain chain = WriteChain(dir_);
  std::string later = NewSnapshotId();
  ASSERT_TRUE(WriteMemoryFile(FilledMemory('b'), chain.base, later).ok());
  testing::ProcessResult result = Merge(chain, dir_ + "/full.state", dir_ + "/full.mem");
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_NE(result.err.find(chain.base + " belongs to snapshot " + SnapshotIdText(later) +
                            ", not to snapshot " + SnapshotIdText(chain.base_id)),
            std::string::npos)
      << result.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/full.mem"));
}

// A path inside a state file is not the restorer's: it may not lead elsewhere.
TEST_F(SnapshotFilesTest, BaseMemoryFileThatIsASymlinkIsRefused) {
  Chain chain = WriteChain(dir_);
  std::string link = dir_ + "/link.mem";
  ASSERT_EQ(::symlink(chain.base.c_str(), link.c_str()), 0);
  auto state = ReadStateFile(chain.state);
  ASSERT_TRUE(state.ok()) << state.status();
  state->set_base_memory_files(0, link);
  std::vector<MemoryFileRef> files = MemoryChain(*state, chain.diff);
  ASSERT_EQ(files.size(), 2u);
  absl::Status status = CheckMemoryFile(files[0], 16 * kPage);
  EXPECT_NE(status.message().find(link + " is a symlink"), std::string::npos) << status;
  // The restorer's own path may be one.
  ASSERT_EQ(::symlink(chain.diff.c_str(), (dir_ + "/diff-link.mem").c_str()), 0);
  EXPECT_TRUE(CheckMemoryFile(MemoryChain(*state, dir_ + "/diff-link.mem")[1], 16 * kPage).ok());
}

// Runs `read` on another thread and expects it to return at once, refusing the FIFO at
// `fifo` with `expected`. Should it block opening the FIFO, a writer opened here releases it,
// so the test fails rather than hangs.
void ExpectFifoRefusedAtOnce(const std::string& fifo, const std::function<absl::Status()>& read,
                             const std::string& expected) {
  std::promise<absl::Status> result;
  std::future<absl::Status> done = result.get_future();
  std::thread reader([&] { result.set_value(read()); });
  bool at_once = done.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  if (!at_once) ::close(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  reader.join();
  EXPECT_TRUE(at_once) << "blocked opening the FIFO " << fifo;
  absl::Status status = done.get();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find(expected), std::string::npos) << status;
}

TEST_F(SnapshotFilesTest, AFifoAsAnySnapshotFileIsRefusedAtOnce) {
  std::string fifo = dir_ + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  ExpectFifoRefusedAtOnce(fifo, [&] { return ReadStateFile(fifo).status(); },
                          "snapshot state file " + fifo + " is a FIFO, not a regular file");
  ExpectFifoRefusedAtOnce(fifo, [&] { return ReadWorkingSetFile(fifo, kBigFile, 1).status(); },
                          "working-set file " + fifo + " is a FIFO");
  ExpectFifoRefusedAtOnce(fifo, [&] { return CheckMemoryFile({fifo, NewSnapshotId()}, kPage); },
                          "snapshot memory file " + fifo + " is a FIFO");
}

TEST_F(SnapshotFilesTest, ADirectoryOrADeviceNodeAsAnySnapshotFileIsRefusedNamingWhatItIs) {
  for (const auto& [path, kind] : {std::pair<std::string, std::string>{dir_, "a directory"},
                                   {"/dev/null", "a character device"}}) {
    std::string expected = path + " is " + kind + ", not a regular file";
    EXPECT_NE(ReadStateFile(path).status().message().find(expected), std::string::npos);
    EXPECT_NE(ReadWorkingSetFile(path, kBigFile, 1).status().message().find(expected),
              std::string::npos);
    EXPECT_NE(CheckMemoryFile({path, NewSnapshotId()}, kPage).message().find(expected),
              std::string::npos);
  }
}

}  // namespace
}  // namespace ember::snapshot
