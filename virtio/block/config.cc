#include "virtio/block/config.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "vmm/base/status.h"

namespace ember::virtio::block {
absl::Status CheckDrivesShareNoWritableFile(const std::vector<BlockConfig>& drives) {
  struct Seen {
    const BlockConfig* drive;
    dev_t dev;
    ino_t ino;
  };
  std::vector<Seen> seen;
  for (const BlockConfig& drive : drives) {
    struct stat st {};
    if (::stat(drive.path.c_str(), &st) != 0) {
      return base::ErrnoError("stat", absl::StrCat("drive ", drive.drive_id, " (", drive.path, ")"));
    }
    for (const Seen& other : seen) {
      if (other.dev == st.st_dev && other.ino == st.st_ino &&
          (!drive.read_only || !other.drive->read_only)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "drives ", other.drive->drive_id, " and ", drive.drive_id,
            " use the same file and at least one is writable"));
      }
    }
    seen.push_back({&drive, st.st_dev, st.st_ino});
  }
  return absl::OkStatus();
}

}  // namespace ember::virtio::block
