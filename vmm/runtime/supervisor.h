#pragma once

#include <string>

#include "container_state.h"
#include "ember/v1/agent.pb.h"
#include "ember/v1/vm_config.pb.h"
#include "runtime_log.h"
#include "vmm/base/unique_fd.h"
#include "vmm_process.h"

namespace ember::runtime {

// What a container's supervisor runs: its VM and, on `start`, its process.
struct SupervisorSpec {
  std::string id;
  StateRoot root{""};
  VmmLaunch launch;
  v1::VmConfig vm;
  v1::ExecRequest workload;
  std::string console_socket;  // "" none: the workload's stdio is the supervisor's
  std::string netns_path;      // with tap_name: the tap to make there for the VM
  std::string tap_name;
  // Jailed: the jail's root, where ember-vmm's vsock socket is (out/v.sock), and its uid.
  std::string jail_root;
  uint32_t jail_uid = 0;
  int boot_timeout_ms = 120'000;
};

// The supervisor: the process `create` forks and names in --pid-file. It starts the VM
// (ember-vmm as its child), waits for the guest agent's ready event, tells `create` through
// `report` ("ok", or "error MESSAGE", one line), then serves the container's commands on its
// socket (command_channel.h): `start` runs the workload through the agent with this
// process's stdio (or the console socket's pty), `kill` signals it through the agent
// (SIGKILL ends the VM), `pause`/`resume` go to ember-vmm. Signals sent to the supervisor
// itself (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2) are passed on as `kill` would.
// When the workload ends the VM is stopped, and the returned value is the process's exit
// status: the workload's, 128 + N when signal N ended it or the VM, 255 when the VM ended on
// its own. Call only in a fresh single-threaded child.
[[nodiscard]] int RunSupervisor(const SupervisorSpec& spec, const RuntimeLog& log,
                                base::UniqueFd report);

}  // namespace ember::runtime
