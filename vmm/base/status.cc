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
  return absl::Status(absl::ErrnoToStatusCode(err), message);
}

absl::Status ErrnoError(std::string_view call, std::string_view object) {
  return ErrnoError(errno, call, object);
}

}  // namespace ember::base
