#include "tests/support/netns.h"

#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ember::testing {

std::string EnterPrivateNetns() {
  static const std::string skip_reason = []() -> std::string {
    if (::geteuid() != 0) return "needs root for a network namespace and taps";
    if (::unshare(CLONE_NEWNET) != 0) {
      return std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
    }
    return "";
  }();
  return skip_reason;
}

}  // namespace ember::testing
