#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ember::runtime {

// The names in the directory open at `dir_fd` ("." and ".." left out), sorted, so that walks
// of a tree (the image key, bind mounts' copies) are the same whatever order readdir gives.
// Reads through a descriptor of its own: `dir_fd` is only borrowed. `shown` names the
// directory in errors. Any thread.
[[nodiscard]] absl::StatusOr<std::vector<std::string>> SortedNames(int dir_fd,
                                                                  const std::string& shown);

}  // namespace ember::runtime
