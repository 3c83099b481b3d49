#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::base {

// Opens `path` as a drive's backing file is opened: read-write unless `read_only`, O_DIRECT
// when `direct_io`, close-on-exec; a FIFO or anything but a regular file or a block device is
// refused at once (opened non-blocking first, so a FIFO cannot hang the caller). For whoever
// asks a running VMM to swap a drive's file (the API front, emberd, with `path` an
// O_PATH fd's /proc/self/fd/N there) and hands it the fd: the VMM opens no such file itself.
// InvalidArgument naming `what` and the path for every failure (the file is the caller's
// choice).
[[nodiscard]] absl::StatusOr<UniqueFd> OpenDriveFile(const std::string& path, bool read_only,
                                                     bool direct_io, const std::string& what);

}  // namespace ember::base
