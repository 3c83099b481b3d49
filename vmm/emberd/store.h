#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace google::protobuf {
class Message;
}

namespace ember::emberd {

// Writes `contents` to `path` atomically and durably (base::WriteFileAtomically): readers see
// the old or the new contents, never a mix, whenever emberd is killed.
[[nodiscard]] absl::Status WriteFileAtomic(const std::string& path, const std::string& contents,
                                           int mode = 0600);

[[nodiscard]] absl::StatusOr<std::string> ReadFile(const std::string& path);

// A message as JSON (proto field names), written with WriteFileAtomic.
[[nodiscard]] absl::Status WriteMessageJson(const std::string& path,
                                            const google::protobuf::Message& message);
[[nodiscard]] absl::Status ReadMessageJson(const std::string& path,
                                           google::protobuf::Message* message);

// The same message in Firecracker's JSON spelling (json_name), for ember-vmm --config.
[[nodiscard]] absl::StatusOr<std::string> ToUserJson(const google::protobuf::Message& message);

// Removes `path` and everything under it; a missing path is not an error.
[[nodiscard]] absl::Status RemoveTree(const std::string& path);

// Copies the regular file open at `in` into the empty file open for writing at `out` (both
// borrowed), data extents only: a snapshot's memory file is mostly holes, and a plain copy
// would allocate every one of them. Returns 0 or the errno of the call that failed (the fork
// server, which also calls it, reports errnos). Uses read, write, lseek, fstat and ftruncate.
[[nodiscard]] int CopySparse(int in, int out);

}  // namespace ember::emberd
