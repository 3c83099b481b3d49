#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "ember/v1/agent.pb.h"
#include "rootfs/agent/handler.h"
#include "rootfs/agent/image_config.h"
#include "rootfs/agent/process_table.h"
#include "vmm/base/unique_fd.h"

namespace ember::agent {

// The exit code of an agent that was asked to shut down (ShutdownRequest). ember-init
// powers the VM off on it; any other end of the agent is a failure.
inline constexpr int kExitShutdown = 0;

struct AgentOptions {
  std::string image_config_path = kImageConfigPath;
  // Tests on a shared host leave its wall clock alone (PostRestore then reports the clock
  // unchanged).
  bool set_clock = true;
};

// ember-agent's requests (proto/ember/v1/agent.proto). One per process; Serve runs on a
// thread per connection.
class Agent {
 public:
  explicit Agent(AgentOptions options);

  // Serves one host connection to its end: its request, any frames that follow, the final
  // response. Takes the connection.
  void Serve(base::UniqueFd fd);

  // What Ready answers and the ready event says.
  [[nodiscard]] absl::StatusOr<v1::ReadyInfo> Info();

 private:
  void ServeExec(class Connection& conn, v1::ExecRequest request);
  // The handler from the request, the image's config filling in what it leaves empty.
  absl::Status StartHandler(const v1::StartHandlerRequest& request);

  const AgentOptions options_;
  std::atomic<std::uint64_t> boot_id_;  // replaced by PostRestore
  ProcessTable processes_;
  Handler handler_;
};

// A random 64-bit value from the kernel's generator.
[[nodiscard]] std::uint64_t RandomU64();

}  // namespace ember::agent
