#include "vmm/emberd/functions/clone.h"

#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

#include "vmm/base/clock.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/emberd/functions/working_set.h"

namespace ember::emberd::functions {
namespace {

constexpr std::size_t kEntropyBytes = 32;
// One try of PostRestore on a resumed clone: connecting (the vsock handshake waits for the
// guest) and its answer.
constexpr int kAgentConnectMs = 1'000;
constexpr int kAgentReplyMs = 10'000;
// A discarded clone's stop before its working set is taken (then it is killed).
constexpr std::chrono::milliseconds kStopMs{2000};

std::uint64_t WallClockNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace

std::string CloneOps::VmIdPrefix(const std::string& function, std::uint64_t seq) {
  return "fn-" + function + "-" + std::to_string(seq);
}

agent_client::Endpoint AgentOf(const Clone& clone) {
  return agent_client::Endpoint::Vsock(AgentEndpointPath(clone.agent_socket));
}

absl::StatusOr<std::unique_ptr<Clone>> CloneOps::Restore(const CloneSource& source,
                                                         std::uint64_t seq, bool cold) {
  const std::uint64_t start = base::MonotonicMicros();
  auto clone = std::make_unique<Clone>();
  const std::string prefix = VmIdPrefix(source.function, seq);
  const std::string vm_id = prefix + "-0";
  const std::string unjailed = source.dir + "/c" + std::to_string(seq) + ".sock";
  if (!sockets_.jailed()) {
    clone->uds_path = unjailed;
    ::unlink(unjailed.c_str());  // a crashed emberd's leftover
  }
  v1::RestoreRequest request;
  request.set_snapshot_id(source.snapshot_id);
  request.set_vm_id_prefix(prefix);
  request.set_count(1);
  const bool uffd = cold && !source.memory_path.empty();
  const std::string working_set = source.memory_path + ".ws";
  if (uffd) {
    request.set_memory_backend(v1::RestoreRequest::UFFD);
    request.set_prefetch_working_set(::access(working_set.c_str(), R_OK) == 0);
  }
  v1::RestoreOverrides* overrides = request.add_overrides();
  overrides->set_vsock_uds_path(sockets_.ConfigPath(unjailed));
  std::vector<std::string> netns_paths;
  if (source.network) {
    EMBER_ASSIGN_OR_RETURN(clone->network,
                           networks_.Acquire(source.function, vm_id, source.deployed));
    if (clone->network != nullptr) {
      clone->network->ApplyTo(overrides);
      netns_paths.push_back(clone->network->netns_path());
    }
  }
  absl::StatusOr<v1::RestoreResponse> restored = vms_.Restore(request, netns_paths);
  if (restored.status().code() == absl::StatusCode::kInvalidArgument &&
      request.prefetch_working_set()) {
    // The VMM refused the set (its CRC or fingerprint, which emberd does not check on a set a
    // jailed clone recorded): every cold clone would fail on it. This one records a new one.
    EMBER_LOG(kWarn) << "emberd: function " << source.function << ": dropping the working set "
                     << working_set << ": " << restored.status().message();
    ::unlink(working_set.c_str());
    request.set_prefetch_working_set(false);
    restored = vms_.Restore(request, netns_paths);
  }
  if (!restored.ok()) return restored.status();
  clone->vm_id = restored->vms(0).vm_id();
  if (uffd && !request.prefetch_working_set() && sockets_.jailed()) {
    clone->working_set_to = working_set;
    clone->memory_bytes = std::uint64_t{source.deployed.machine_config().mem_size_mib()} << 20;
  }
  // The VMM made its socket before it said it was restored.
  absl::StatusOr<base::UniqueFd> socket =
      OpenAgentSocket(sockets_.HostPath(clone->vm_id, unjailed));
  if (!socket.ok()) {
    Discard(*clone);
    return socket.status();
  }
  clone->agent_socket = std::move(*socket);
  clone->restore_us = base::MonotonicMicros() - start;
  return clone;
}

absl::Status CloneOps::Activate(Clone& clone, int timeout_ms) {
  EMBER_RETURN_IF_ERROR(vms_.Resume(clone.vm_id).status());
  v1::PostRestoreRequest request;
  request.set_wall_clock_ns(WallClockNs());
  std::string entropy(kEntropyBytes, '\0');
  if (::getrandom(entropy.data(), entropy.size(), 0) != static_cast<ssize_t>(entropy.size())) {
    return base::ErrnoError("getrandom", "a clone's entropy");
  }
  request.set_entropy(std::move(entropy));
  agent_client::Options options;
  options.connect_timeout_ms = kAgentConnectMs;
  options.reply_timeout_ms = kAgentReplyMs;
  agent_client::AgentClient agent(AgentOf(clone), options);
  absl::Status answered = UntilAgentAnswers(
      [&] { return agent.PostRestore(request).status(); }, timeout_ms,
      [&]() -> absl::Status {
        // A clone whose VM ended (stopped by a forced delete, crashed) is given up at once.
        absl::StatusOr<v1::Vm> vm = vms_.Get(clone.vm_id);
        if (vm.ok() && vm->state() == v1::Vm::RUNNING) return absl::OkStatus();
        return absl::UnavailableError("it stopped before its agent answered");
      });
  if (!answered.ok()) {
    return absl::UnavailableError("clone " + clone.vm_id + ": PostRestore after resuming: " +
                                  std::string(answered.message()));
  }
  clone.activated = true;
  return absl::OkStatus();
}

absl::StatusOr<agent_client::InvokeOutcome> CloneOps::Invoke(Clone& clone, std::string payload,
                                                             std::uint32_t timeout_ms) {
  agent_client::Options options;
  // The whole wait is the invocation's timeout: AgentClient adds this to it.
  options.reply_timeout_ms = 0;
  agent_client::AgentClient agent(AgentOf(clone), options);
  absl::StatusOr<agent_client::InvokeOutcome> outcome = agent.Invoke(std::move(payload),
                                                                     timeout_ms);
  if (outcome.status().code() == absl::StatusCode::kDeadlineExceeded) {
    return absl::DeadlineExceededError("the handler did not answer within " +
                                       std::to_string(timeout_ms) + " ms");
  }
  return outcome;
}

void CloneOps::Discard(Clone& clone) {
  if (!clone.vm_id.empty() && !clone.working_set_to.empty()) {
    // Its VMM writes the set as it ends; the jail goes with the VM.
    (void)vms_.Stop(clone.vm_id, kStopMs);
    if (absl::Status taken = TakeRecordedWorkingSet(sockets_.JailOutputDir(clone.vm_id),
                                                    clone.memory_bytes, clone.working_set_to);
        !taken.ok()) {
      EMBER_LOG(kWarn) << "emberd: function clone " << clone.vm_id
                       << ": its working set was not taken: " << taken.message();
    }
  }
  if (!clone.vm_id.empty()) {
    if (absl::Status status = vms_.Delete(clone.vm_id, /*force=*/true);
        !status.ok() && status.code() != absl::StatusCode::kNotFound) {
      EMBER_LOG(kWarn) << "emberd: function clone " << clone.vm_id
                       << " not discarded: " << status.message();
    }
  }
  clone.agent_socket.Reset();
  if (!clone.uds_path.empty()) ::unlink(clone.uds_path.c_str());
  clone.network.reset();  // after its VMM is gone
}

}  // namespace ember::emberd::functions
