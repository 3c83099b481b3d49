#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "ember/v1/api.pb.h"
#include "vmm/agent_client/agent_client.h"
#include "vmm/base/unique_fd.h"
#include "vmm/emberd/functions/agent_socket.h"
#include "vmm/emberd/functions/clone_network.h"
#include "vmm/emberd/vm_manager.h"

namespace ember::emberd::functions {

// One clone of a function's warm snapshot: an emberd VM (restored PAUSED) and what the
// function layer keeps beside it. Owned by one holder at a time (the pool, or the invocation
// it serves), so unguarded.
struct Clone {
  std::string vm_id;
  // Unjailed, its vsock socket in the function's directory, removed with the clone (a jailed
  // clone's goes with its jail): empty when jailed.
  std::string uds_path;
  // Its VMM's vsock socket (OpenAgentSocket), through which the agent (guest port 1024) is
  // reached.
  base::UniqueFd agent_socket;
  std::unique_ptr<CloneNetworkLease> network;  // null without a network
  bool activated = false;      // resumed and past PostRestore: serves invocations as it is
  std::uint64_t restore_us = 0;
  std::uint64_t warm_until_us = 0;  // kept warm after an invocation until then (monotonic)
  // Jailed and restored through userfaultfd with no working set recorded yet: where the set it
  // records goes once it has ended (TakeRecordedWorkingSet), and its guest memory's size.
  std::string working_set_to;
  std::uint64_t memory_bytes = 0;
};

// What a clone is made from: a READY function's snapshot and where its sockets go.
struct CloneSource {
  std::string function;
  std::string snapshot_id;
  std::string dir;            // the function's directory: its clones' sockets
  v1::VmConfig deployed;      // the deploy VM's configuration
  bool network = false;
  // The snapshot's memory file: a working set recorded beside it (<memory_path>.ws) lets a
  // cold clone prefetch it.
  std::string memory_path;
};

// The endpoint of a clone's agent.
[[nodiscard]] agent_client::Endpoint AgentOf(const Clone& clone);

// A clone's steps, each through emberd's own VM machinery (VmManager: Restore, Resume,
// Delete): nothing here spawns or talks to an ember-vmm itself. Any thread; `vms` and
// `networks` outlive it.
class CloneOps {
 public:
  CloneOps(VmManager& vms, CloneNetworks& networks, AgentSockets sockets)
      : vms_(vms), networks_(networks), sockets_(std::move(sockets)) {}

  // The VM id of clone `seq` of `function` (its Restore's vm_id_prefix plus "-0").
  [[nodiscard]] static std::string VmIdPrefix(const std::string& function, std::uint64_t seq);
  // Restores clone `seq` PAUSED, its network acquired first. `cold`: for an invocation that
  // waits on it (no pooled clone was ready), so its memory comes through userfaultfd, the
  // recorded working set loaded in bulk before the vCPUs run, or without one yet the set
  // recorded as the clone ends (unjailed, by its VMM beside the memory file; jailed, into its
  // jail, from which Discard takes it). A set the VMM refuses is dropped and the clone restored
  // again recording one. Pooled clones, restored ahead of invocations, map the file
  // copy-on-write: they share its page cache while they wait.
  [[nodiscard]] absl::StatusOr<std::unique_ptr<Clone>> Restore(const CloneSource& source,
                                                               std::uint64_t seq,
                                                               bool cold = false);
  // Resumes a restored clone and sends its agent PostRestore (the host's clock, fresh
  // entropy), again until the agent answers, for up to `timeout_ms`: a restored guest serves
  // once it has run past its transport reset, and a real agent announces itself only at boot,
  // so no ready event is waited for.
  [[nodiscard]] absl::Status Activate(Clone& clone, int timeout_ms);
  // One payload to the clone's handler; DEADLINE_EXCEEDED when it has not answered after
  // `timeout_ms`.
  [[nodiscard]] absl::StatusOr<agent_client::InvokeOutcome> Invoke(Clone& clone,
                                                                   std::string payload,
                                                                   std::uint32_t timeout_ms);
  // Ends and forgets the clone's VM, removes its sockets and releases its network; first takes
  // the working set a jailed clone recorded. Never fails: what cannot be removed is logged (an
  // emberd restart removes it).
  void Discard(Clone& clone);

 private:
  VmManager& vms_;
  CloneNetworks& networks_;
  const AgentSockets sockets_;
};

}  // namespace ember::emberd::functions
