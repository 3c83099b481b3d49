#include "vmm/emberd/snapshot_publish.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "vmm/base/atomic_file.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::emberd {
namespace {

// [offset, offset + length) of `in` to the same offsets of `out` with pread and pwrite: where
// copy_file_range cannot (another file system on an older kernel, or none at all).
int CopyRangeByHand(int in, int out, std::uint64_t offset, std::uint64_t length) {
  std::vector<char> buffer(1 << 20);
  while (length > 0) {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(length, buffer.size()));
    ssize_t n = ::pread(in, buffer.data(), want, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;  // it shrank under us: the copy would not be it
    for (ssize_t done = 0; done < n;) {
      ssize_t w = ::pwrite(out, buffer.data() + done, static_cast<std::size_t>(n - done),
                           static_cast<off_t>(offset) + done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return errno;
      done += w;
    }
    offset += static_cast<std::uint64_t>(n);
    length -= static_cast<std::uint64_t>(n);
  }
  return 0;
}

int CopyRange(int in, int out, std::uint64_t offset, std::uint64_t length) {
  auto in_off = static_cast<off_t>(offset);
  auto out_off = static_cast<off_t>(offset);
  while (length > 0) {
    // In the kernel, page cache to page cache: no trip through emberd's memory.
    ssize_t n = ::copy_file_range(in, &in_off, out, &out_off, length, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS)) {
      return CopyRangeByHand(in, out, static_cast<std::uint64_t>(in_off), length);
    }
    if (n < 0) return errno;
    if (n == 0) return EIO;
    length -= static_cast<std::uint64_t>(n);
  }
  return 0;
}

}  // namespace

int CopyDataRanges(int in, int out, std::uint64_t size) {
  const auto end = static_cast<off_t>(size);
  off_t pos = 0;
  while (pos < end) {
    off_t data = ::lseek(in, pos, SEEK_DATA);
    if (data < 0 && errno == ENXIO) return 0;  // only a hole is left
    if (data < 0) return errno;
    if (data >= end) return 0;
    off_t hole = ::lseek(in, data, SEEK_HOLE);
    if (hole < 0) return errno;
    hole = std::min(hole, end);
    if (int err = CopyRange(in, out, static_cast<std::uint64_t>(data),
                            static_cast<std::uint64_t>(hole - data));
        err != 0) {
      return err;
    }
    pos = hole;
  }
  return 0;
}

absl::Status PublishSnapshotFile(const std::string& from, uid_t vmm_uid, const std::string& to,
                                 const PublishedFile& owner) {
  base::UniqueFd in(::open(from.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!in) return base::ErrnoError("open", from);
  struct stat st {};
  if (::fstat(in.Get(), &st) != 0) return base::ErrnoError("fstat", from);
  if (!S_ISREG(st.st_mode) || st.st_uid != vmm_uid || st.st_nlink != 1) {
    return absl::InternalError(from + ": the jailed ember-vmm left something other than a "
                               "regular file of its own (uid " + std::to_string(vmm_uid) +
                               ") with one link");
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  // Created by emberd, under a name of its own: the VMM never had it open.
  EMBER_ASSIGN_OR_RETURN(base::AtomicFile out, base::AtomicFile::Create(to, 0600));
  if (::ftruncate(out.fd(), static_cast<off_t>(size)) != 0) {
    return base::ErrnoError("ftruncate", out.temp_path());
  }
  if (int err = CopyDataRanges(in.Get(), out.fd(), size); err != 0) {
    return base::ErrnoError(err, "copying " + from + " to", out.temp_path());
  }
  if (::fchown(out.fd(), owner.uid, owner.gid) != 0) {
    return base::ErrnoError("handing to the snapshot group", out.temp_path());
  }
  if (::fchmod(out.fd(), 0440) != 0) return base::ErrnoError("fchmod", out.temp_path());
  EMBER_RETURN_IF_ERROR(out.Commit(owner.durable ? base::AtomicFile::Durability::kDurable
                                                 : base::AtomicFile::Durability::kRenameOnly));
  ::unlink(from.c_str());
  return absl::OkStatus();
}

}  // namespace ember::emberd
