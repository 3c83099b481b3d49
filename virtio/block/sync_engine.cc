#include "virtio/block/sync_engine.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

namespace ember::virtio::block {
namespace {

// preadv/pwritev until everything moved, EOF, or an error. Returns bytes moved or -errno.
template <typename Op>
std::int64_t Transfer(Op op, int fd, std::uint64_t offset, const IoVecs& iovs) {
  IoVecs rest = iovs;
  std::size_t first = 0;
  std::int64_t total = 0;
  while (first < rest.size()) {
    const ssize_t n = op(fd, rest.data() + first, static_cast<int>(rest.size() - first),
                         static_cast<off_t>(offset + static_cast<std::uint64_t>(total)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) break;  // EOF: a short transfer, which the device reports as an error
    total += n;
    auto left = static_cast<std::size_t>(n);
    while (first < rest.size() && left >= rest[first].iov_len) {
      left -= rest[first].iov_len;
      ++first;
    }
    if (first < rest.size()) {
      rest[first].iov_base = static_cast<std::uint8_t*>(rest[first].iov_base) + left;
      rest[first].iov_len -= left;
    }
  }
  return total;
}

std::int64_t Fallocate(int fd, int mode, std::uint64_t offset, std::uint64_t len) {
  if (::fallocate(fd, mode, static_cast<off_t>(offset), static_cast<off_t>(len)) != 0) {
    return -errno;
  }
  return 0;
}

}  // namespace

int WriteZeroesMode(bool unmap) {
  return unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
               : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
}

void SyncEngine::Read(std::uint64_t offset, const IoVecs& iovs, std::uint64_t cookie) {
  done_.push_back({cookie, Transfer(::preadv, fd_, offset, iovs)});
}

void SyncEngine::Write(std::uint64_t offset, const IoVecs& iovs, std::uint64_t cookie) {
  done_.push_back({cookie, Transfer(::pwritev, fd_, offset, iovs)});
}

void SyncEngine::Flush(std::uint64_t cookie) {
  done_.push_back({cookie, ::fdatasync(fd_) == 0 ? 0 : -errno});
}

void SyncEngine::WriteZeroes(std::uint64_t offset, std::uint64_t len, bool unmap,
                             std::uint64_t cookie) {
  done_.push_back({cookie, Fallocate(fd_, WriteZeroesMode(unmap), offset, len)});
}

void SyncEngine::Reap(std::vector<Completion>* out) {
  out->insert(out->end(), done_.begin(), done_.end());
  done_.clear();
}

}  // namespace ember::virtio::block
