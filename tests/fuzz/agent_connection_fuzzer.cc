// libFuzzer target: ember-agent's side of the agent protocol (rootfs/agent/connection.h): the
// host's bytes on one connection, read request by request as the agent reads them, until the
// stream ends or is refused. The host is trusted less than it seems (a compromised VMM can
// speak for it), so a bad frame must be an error, never a crash.

#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <optional>

#include "rootfs/agent/connection.h"
#include "vmm/base/unique_fd.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ember;
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  base::UniqueFd host(fds[0]);
  base::UniqueFd agent_end(fds[1]);
  // Non-blocking, as the agent's connections are; an input the socket's buffer cannot hold
  // at once (far above libFuzzer's -max_len) is skipped.
  if (::write(host.Get(), data, size) != static_cast<ssize_t>(size)) return 0;
  ::shutdown(host.Get(), SHUT_WR);
  agent::Connection conn(std::move(agent_end));
  for (int i = 0; i < 1000; ++i) {
    // The bytes are all there already: the timeout is never reached.
    absl::StatusOr<std::optional<v1::AgentRequest>> request = conn.Read(/*timeout_ms=*/1000);
    if (!request.ok() || !request->has_value()) break;
  }
  return 0;
}
