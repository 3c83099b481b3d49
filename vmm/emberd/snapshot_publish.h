#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace ember::emberd {

// Who a published snapshot file belongs to, and whether it is made durable.
struct PublishedFile {
  uid_t uid = 0;        // root, for a jailed VM's snapshot (emberd is root then)
  gid_t gid = 0;        // the snapshot group, through which clones read it (mode 0440)
  bool durable = true;  // fsync before the rename into place (base::AtomicFile::kDurable)
};

// Publishes the snapshot file that a jailed ember-vmm running as `vmm_uid` wrote at `from` as
// a new file at `to` that no VMM ever had open: emberd creates it, copies the data ranges of
// `from` into it (SEEK_DATA/SEEK_HOLE, so holes stay holes, and copy_file_range), hands it to
// `owner` with mode 0440 and renames it into place; then removes `from`. Handing the VMM's own
// file to root (a rename and a chown) would revoke nothing: a VMM that kept a writable fd or a
// MAP_SHARED mapping of it could write on after the seal, and every clone, which maps the
// memory file MAP_PRIVATE, would see the pages it had not copied yet change.
//
// `from` must be a regular file of `vmm_uid` with one link (the jail's output directory is the
// VMM's to fill: otherwise the VMM could have emberd copy, as root, a file not its own); only
// its size when opened is copied, and a file that shrinks meanwhile fails the copy. What the VMM
// writes into `from` while it is copied may or may not be in the copy, as if written before the
// snapshot; nothing it writes after this returns reaches `to`. INTERNAL naming the file for a
// `from` that breaks the rule; errno errors naming the call otherwise, with `to` left as it
// was. Any thread; needs fchown to `owner` (root's, for a jailed emberd).
[[nodiscard]] absl::Status PublishSnapshotFile(const std::string& from, uid_t vmm_uid,
                                               const std::string& to, const PublishedFile& owner);

// Copies the data ranges of `in`'s first `size` bytes to the same offsets of `out` (whose size
// the caller has set), leaving holes as holes: copy_file_range where the kernel can, read and
// write where it cannot. EIO if `in` ends before `size`. 0 or an errno value.
[[nodiscard]] int CopyDataRanges(int in, int out, std::uint64_t size);

}  // namespace ember::emberd
