#include "vmm/emberd/functions/agent_socket.h"

#include <fcntl.h>

#include <chrono>
#include <thread>

#include "vmm/agent_client/socket_file.h"
#include "vmm/base/clock.h"
#include "vmm/base/status.h"
#include "vmm/emberd/launcher.h"

namespace ember::emberd::functions {
namespace {

// The socket's name in a jail's output directory (JailedView admits only that directory).
constexpr char kJailSocket[] = "/out/agent.sock";
// Between tries: a refused connection comes back within a guest's turn, so a short pause.
constexpr auto kRetryPause = std::chrono::milliseconds(2);

}  // namespace

std::string AgentSockets::ConfigPath(const std::string& unjailed) const {
  return jailed() ? kJailSocket : unjailed;
}

std::string AgentSockets::HostPath(const std::string& vm_id, const std::string& unjailed) const {
  return jailed() ? jail_dir_ + "/" + vm_id + "/root" + kJailSocket : unjailed;
}

std::string AgentSockets::JailOutputDir(const std::string& vm_id) const {
  return jail_dir_ + "/" + vm_id + "/root/" + kJailOutputDir;
}

absl::StatusOr<base::UniqueFd> OpenAgentSocket(const std::string& path) {
  return agent_client::OpenSocketFile(AT_FDCWD, path, std::nullopt);
}

std::string AgentEndpointPath(const base::UniqueFd& socket) {
  return agent_client::SocketFdPath(socket);
}

absl::Status UntilAgentAnswers(const std::function<absl::Status()>& call, int timeout_ms,
                               const std::function<absl::Status()>& alive) {
  const std::uint64_t deadline =
      base::MonotonicMicros() + static_cast<std::uint64_t>(timeout_ms) * 1000;
  while (true) {
    absl::Status status = call();
    if (status.ok()) return status;
    if (base::MonotonicMicros() >= deadline) {
      return absl::Status(status.code(), "the agent did not answer within " +
                                             std::to_string(timeout_ms) +
                                             " ms: " + std::string(status.message()));
    }
    EMBER_RETURN_IF_ERROR(alive());
    std::this_thread::sleep_for(kRetryPause);
  }
}

}  // namespace ember::emberd::functions
