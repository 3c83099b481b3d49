#pragma once

#include "absl/status/status.h"
#include "rootfs/image/options.h"

namespace ember::rootfs {

// Builds the image `options` describe (ember-rootfs's whole job). Bad input (a missing or
// hostile source, a --size too small) is InvalidArgument, NotFound, DataLoss or
// FailedPrecondition, and leaves nothing at the image's path; anything else is the host's
// failure.
[[nodiscard]] absl::Status BuildRootfs(const Options& options);

}  // namespace ember::rootfs
