#include "vmm/base/status.h"

#include <cerrno>
#include <cstring>
#include <string>


namespace ember::base {

absl::Status ErrnoError(int err, std::string_view call, std::string_view object) {
  // Debian's abseil has its own string_view type, so build the text with std::string.
  std::string message(call);
  if (!object.empty()) message.append(" ").append(object);
  message.append(" failed: ").append(std::strerror(err));
  message.append(" (errno ").append(std::to_string(err)).append(")");
  absl::StatusCode code = absl::ErrnoToStatusCode(err);
  // InvalidArgument is reserved for the user's bad input, which callers mark explicitly; an
  // EINVAL from the kernel is the VMM's own failure.
  if (code == absl::StatusCode::kInvalidArgument) code = absl::StatusCode::kInternal;
  return absl::Status(code, message);
}

absl::Status ErrnoError(std::string_view call, std::string_view object) {
  return ErrnoError(errno, call, object);
}

}  // namespace ember::base
