// Fds on the control channel: a frame sent with an fd (SendFrame) hands exactly that frame the
// fd on the reading side (FrameReader::NextWithFds), over a real socketpair.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "ember/v1/vmm_control.pb.h"
#include "vmm/base/unique_fd.h"
#include "vmm/control/frame.h"

namespace ember::control {
namespace {

struct Pair {
  base::UniqueFd writer;
  base::UniqueFd reader;
};

Pair MakePair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds), 0);
  return {base::UniqueFd(fds[0]), base::UniqueFd(fds[1])};
}

v1::ControlRequest Request(std::uint64_t id) {
  v1::ControlRequest request;
  request.set_id(id);
  request.mutable_update_drive()->set_drive_id("disk");
  request.mutable_update_drive()->set_path(std::string(100, 'p'));
  return request;
}

ino_t Inode(int fd) {
  struct stat info {};
  EXPECT_EQ(::fstat(fd, &info), 0);
  return info.st_ino;
}

TEST(FrameFds, AnFdSentWithAFrameReachesThatFrameOnly) {
  Pair pair = MakePair();
  base::UniqueFd file(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(file);
  ASSERT_TRUE(SendFrame(pair.writer.Get(), Request(1), -1, 1000).ok());
  ASSERT_TRUE(SendFrame(pair.writer.Get(), Request(2), file.Get(), 1000).ok());
  ASSERT_TRUE(SendFrame(pair.writer.Get(), Request(3), -1, 1000).ok());

  FrameReader reader;
  ASSERT_TRUE(reader.ReadWithFdsFrom(pair.reader.Get()).ok());
  std::string payload;
  std::vector<base::UniqueFd> fds;
  std::vector<std::size_t> counts;
  while (*reader.NextWithFds(&payload, &fds)) {
    counts.push_back(fds.size());
    if (fds.size() == 1) {
      EXPECT_EQ(Inode(fds[0].Get()), Inode(file.Get()));
    }
  }

  EXPECT_EQ(counts, (std::vector<std::size_t>{0, 1, 0}));
}

TEST(FrameFds, AnFdTheFrameDidNotTakeIsNotHandedToALaterFrame) {
  Pair pair = MakePair();
  base::UniqueFd file(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(SendFrame(pair.writer.Get(), Request(1), file.Get(), 1000).ok());
  ASSERT_TRUE(SendFrame(pair.writer.Get(), Request(2), -1, 1000).ok());
  FrameReader reader;
  ASSERT_TRUE(reader.ReadWithFdsFrom(pair.reader.Get()).ok());
  std::string payload;
  std::vector<base::UniqueFd> fds;

  ASSERT_TRUE(*reader.NextWithFds(&payload, &fds));
  fds.clear();  // the first frame's handler ignores its fd
  ASSERT_TRUE(*reader.NextWithFds(&payload, &fds));

  EXPECT_TRUE(fds.empty());
}

TEST(FrameFds, FramesWithFdsReadOneMessageAtATimeKeepTheirOwn) {
  Pair pair = MakePair();
  base::UniqueFd first(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  base::UniqueFd second(::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(SendFrame(pair.writer.Get(), Request(1), first.Get(), 1000).ok());
  ASSERT_TRUE(SendFrame(pair.writer.Get(), Request(2), second.Get(), 1000).ok());
  FrameReader reader;
  ASSERT_TRUE(reader.ReadWithFdsFrom(pair.reader.Get()).ok());
  std::string payload;
  std::vector<base::UniqueFd> fds;

  ASSERT_TRUE(*reader.NextWithFds(&payload, &fds));
  ASSERT_EQ(fds.size(), 1u);
  EXPECT_EQ(Inode(fds[0].Get()), Inode(first.Get()));
  ASSERT_TRUE(*reader.NextWithFds(&payload, &fds));
  ASSERT_EQ(fds.size(), 1u);
  EXPECT_EQ(Inode(fds[0].Get()), Inode(second.Get()));
}

}  // namespace
}  // namespace ember::control
