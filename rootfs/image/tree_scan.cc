#include "rootfs/image/tree_scan.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <set>
#include <utility>

#include "rootfs/image/interrupt.h"
#include "rootfs/image/work_dir.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::rootfs {
namespace {

constexpr uint64_t kBlock = 4096;
// A symlink target this long or longer no longer fits in the inode.
constexpr uint64_t kInlineSymlinkMax = 59;

uint64_t RoundUp(uint64_t bytes) { return (bytes + kBlock - 1) / kBlock * kBlock; }

class Scanner {
 public:
  explicit Scanner(std::string display_root) : display_root_(std::move(display_root)) {}

  absl::Status ScanDirectory(int dir_fd, const std::string& relative) {
    EMBER_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDirectory(dir_fd, Show(relative)));
    for (const std::string& name : names) {
      EMBER_RETURN_IF_ERROR(CheckInterrupt());
      EMBER_RETURN_IF_ERROR(
          ScanEntry(dir_fd, name, relative.empty() ? name : relative + "/" + name));
    }
    return absl::OkStatus();
  }

  TreeStats stats() const { return stats_; }

 private:
  std::string Show(const std::string& relative) const {
    return relative.empty() ? display_root_ : display_root_ + "/" + relative;
  }

  absl::Status ScanEntry(int dir_fd, const std::string& name, const std::string& relative) {
    struct stat st {};
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return base::ErrnoError("stat", Show(relative));
    }
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    switch (st.st_mode & S_IFMT) {
      case S_IFCHR:
      case S_IFBLK:
        return absl::InvalidArgumentError("device node " + Show(relative) +
                                          ": an image carries none (the guest's devtmpfs does)");
      case S_IFSOCK:
        return absl::OkStatus();
      case S_IFLNK:
        ++stats_.entries;
        if (size > kInlineSymlinkMax) stats_.data_bytes += kBlock;
        return absl::OkStatus();
      case S_IFDIR: {
        ++stats_.entries;
        stats_.data_bytes += RoundUp(std::max<uint64_t>(size, kBlock));
        base::UniqueFd child(
            ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!child) return base::ErrnoError("open", Show(relative));
        return ScanDirectory(child.Get(), relative);
      }
      default:
        break;
    }
    if (st.st_nlink > 1 && !seen_.insert({st.st_dev, st.st_ino}).second) return absl::OkStatus();
    ++stats_.entries;
    // Holes cost nothing: mke2fs -d copies only the data (SEEK_DATA/SEEK_HOLE). A file system
    // that reports no blocks for data it holds inline is taken at the file's size.
    uint64_t allocated = static_cast<uint64_t>(st.st_blocks) * 512;
    stats_.data_bytes += RoundUp(allocated == 0 ? size : std::min(size, allocated));
    return absl::OkStatus();
  }

  std::string display_root_;
  TreeStats stats_;
  std::set<std::pair<dev_t, ino_t>> seen_;  // hard-linked files already counted
};

}  // namespace

absl::StatusOr<TreeStats> ScanTree(int root_fd, const std::string& display_root) {
  Scanner scanner(display_root);
  if (absl::Status status = scanner.ScanDirectory(root_fd, ""); !status.ok()) return status;
  TreeStats stats = scanner.stats();
  ++stats.entries;  // the root itself
  stats.data_bytes += kBlock;
  return stats;
}

}  // namespace ember::rootfs
