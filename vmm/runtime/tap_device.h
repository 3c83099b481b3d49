#pragma once

#include <string>

#include "absl/status/status.h"

namespace ember::runtime {

// A container's tap: made persistent and up inside the container's network namespace (at
// `netns_path`) before ember-vmm attaches to it there, and removed when the container goes.
// Enters the namespace for the call and returns to its own; call from a single-threaded
// process.
[[nodiscard]] absl::Status CreateTap(const std::string& netns_path, const std::string& name);
// Removes the tap; a tap or namespace already gone is fine. A tap a dying VMM still holds is
// waited for (a few seconds at most).
[[nodiscard]] absl::Status DeleteTap(const std::string& netns_path, const std::string& name);

}  // namespace ember::runtime
