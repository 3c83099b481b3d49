#pragma once

#include <sys/types.h>

#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::base {

// Sends `data` on the Unix socket `socket` (borrowed) with `fds` (borrowed; at most
// kMaxPassedFds) attached to its first byte (SCM_RIGHTS), in one sendmsg; never raises
// SIGPIPE. Returns the bytes sent, which may be fewer than data.size() on a non-blocking or
// timed-out socket (the fds went with the first byte; send the rest as plain bytes). Errors
// keep sendmsg's errno.
[[nodiscard]] absl::StatusOr<std::size_t> SendWithFds(int socket, std::string_view data,
                                                     std::span<const int> fds);

// The most fds one message carries in Ember's protocols.
constexpr std::size_t kMaxPassedFds = 8;

// One recvmsg on `socket` (borrowed) into `buffer`: the bytes read (0 once the peer has
// closed) and the fds that came with them, owned, close-on-exec. Fds beyond kMaxPassedFds are
// closed by the kernel, and then none of that message's are kept; ancillary data other than
// SCM_RIGHTS is dropped. Errors keep recvmsg's errno (EAGAIN is would_block instead).
struct Received {
  std::size_t bytes = 0;
  std::vector<UniqueFd> fds;
  bool would_block = false;  // a non-blocking socket had nothing (EAGAIN): bytes is 0
};
[[nodiscard]] absl::StatusOr<Received> ReceiveWithFds(int socket, std::span<char> buffer);

}  // namespace ember::base
