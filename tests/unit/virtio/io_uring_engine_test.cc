// The io_uring engine's ring as a compromised VMM would use it: whatever it writes into the
// ring, the kernel only runs the engine's own operations on the drive's registered file.
#include "virtio/block/io_uring_engine.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "vmm/base/unique_fd.h"

namespace ember::virtio::block {
namespace {

// A 4 KiB file of 'd' bytes in the test's temporary directory, removed afterwards.
class TempFile {
 public:
  TempFile() {
    path_ = ::testing::TempDir() + "/ember_uring_XXXXXX";
    fd_ = base::UniqueFd(::mkstemp(path_.data()));
    EXPECT_TRUE(fd_);
    const std::string bytes(4096, 'd');
    EXPECT_EQ(::write(fd_.Get(), bytes.data(), bytes.size()), 4096);
  }
  ~TempFile() { ::unlink(path_.c_str()); }
  int fd() const { return fd_.Get(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  base::UniqueFd fd_;
};

class IoUringEngineRing : public ::testing::Test {
 protected:
  IoUringEngineRing() : engine_(IoUringEngine::Create(drive_.fd(), 16).value()) {}

  // Writes one SQE into the engine's ring as `prep` fills it, submits it, and returns its
  // completion's result.
  template <typename Prep>
  int SubmitRaw(Prep prep) {
    io_uring& ring = engine_->ring_for_testing();
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    EXPECT_NE(sqe, nullptr);
    if (sqe == nullptr) return 0;
    prep(sqe);
    io_uring_sqe_set_data64(sqe, 77);
    EXPECT_EQ(io_uring_submit_and_wait(&ring, 1), 1);
    io_uring_cqe* cqe = nullptr;
    EXPECT_EQ(io_uring_peek_cqe(&ring, &cqe), 0);
    if (cqe == nullptr) return 0;
    EXPECT_EQ(io_uring_cqe_get_data64(cqe), 77u);
    const int result = cqe->res;
    io_uring_cqe_seen(&ring, cqe);
    return result;
  }

  TempFile drive_;
  TempFile other_;  // a file the VMM holds open but never registered
  std::unique_ptr<IoUringEngine> engine_;
  char buffer_[4096] = {};
};

TEST_F(IoUringEngineRing, RefusesToOpenAFile) {
  const int result = SubmitRaw([&](io_uring_sqe* sqe) {
    io_uring_prep_openat(sqe, AT_FDCWD, other_.path().c_str(), O_RDONLY | O_CLOEXEC, 0);
  });
  if (result >= 0) ::close(result);
  EXPECT_EQ(result, -EACCES);
}

TEST_F(IoUringEngineRing, RefusesToCreateASocket) {
  const int result =
      SubmitRaw([](io_uring_sqe* sqe) { io_uring_prep_socket(sqe, AF_INET, SOCK_STREAM, 0, 0); });
  if (result >= 0) ::close(result);
  EXPECT_EQ(result, -EACCES);
}

TEST_F(IoUringEngineRing, RefusesToReadAFileItDidNotRegister) {
  EXPECT_EQ(SubmitRaw([&](io_uring_sqe* sqe) {
              io_uring_prep_read(sqe, other_.fd(), buffer_, sizeof(buffer_), 0);
            }),
            -EACCES);
  EXPECT_EQ(buffer_[0], 0);
}

TEST_F(IoUringEngineRing, RefusesToRegisterAnotherFileTable) {
  int fd = other_.fd();
  io_uring& ring = engine_->ring_for_testing();
  EXPECT_EQ(io_uring_unregister_files(&ring), -EACCES);
  EXPECT_EQ(io_uring_register_files(&ring, &fd, 1), -EACCES);
}

TEST_F(IoUringEngineRing, RefusesToRegisterBuffersOrAnotherEventfd) {
  io_uring& ring = engine_->ring_for_testing();
  iovec buffer{buffer_, sizeof(buffer_)};
  EXPECT_EQ(io_uring_register_buffers(&ring, &buffer, 1), -EACCES);
  EXPECT_EQ(io_uring_unregister_eventfd(&ring), -EACCES);
}

// A drive swap's update of the one slot is the registration left open: the file it puts there
// gets only the engine's operations, which the VMM thread's filter allows on any fd.
TEST_F(IoUringEngineRing, ReplaceFileAimsLaterReadsAtTheNewFile) {
  const std::string marker = "the other file..";  // the drive reads 'd' there
  ASSERT_EQ(::pwrite(other_.fd(), marker.data(), marker.size(), 0), 16);
  ASSERT_TRUE(engine_->ReplaceFile(other_.fd()).ok());
  std::vector<Completion> done;
  char data[16] = {};
  IoVecs iovs;
  iovs.push_back({data, sizeof(data)});
  engine_->Read(0, iovs, 5);
  engine_->Submit();
  ASSERT_TRUE(engine_->WaitForCompletion(std::chrono::seconds(5)).ok());
  engine_->Reap(&done);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].result, static_cast<std::int64_t>(sizeof(data)));
  EXPECT_EQ(std::string(data, sizeof(data)), marker);
}

// The control: what the engine itself does still runs.
TEST_F(IoUringEngineRing, ReadsTheRegisteredFile) {
  EXPECT_EQ(SubmitRaw([&](io_uring_sqe* sqe) {
              io_uring_prep_read(sqe, 0, buffer_, sizeof(buffer_), 0);
              io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE);
            }),
            4096);
  EXPECT_EQ(buffer_[0], 'd');
}

TEST_F(IoUringEngineRing, WaitForCompletionGivesUpAtItsTimeout) {
  const auto start = std::chrono::steady_clock::now();
  absl::Status waited = engine_->WaitForCompletion(std::chrono::milliseconds(20));
  EXPECT_TRUE(absl::IsDeadlineExceeded(waited)) << waited;
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(20));
}

}  // namespace
}  // namespace ember::virtio::block
