#include "vmm/emberd/functions/clone.h"

#include <poll.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "vmm/base/clock.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"

namespace ember::emberd::functions {
namespace {

constexpr std::size_t kEntropyBytes = 32;
// Connecting and PostRestore on a clone that just said it is ready.
constexpr int kAgentReplyMs = 10'000;

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

absl::StatusOr<std::unique_ptr<Clone>> CloneOps::Restore(const CloneSource& source,
                                                         std::uint64_t seq) {
  const std::uint64_t start = base::MonotonicMicros();
  auto clone = std::make_unique<Clone>();
  const std::string prefix = VmIdPrefix(source.function, seq);
  clone->uds_path = source.dir + "/c" + std::to_string(seq) + ".sock";
  ::unlink(clone->uds_path.c_str());  // a crashed emberd's leftover
  v1::RestoreRequest request;
  request.set_snapshot_id(source.snapshot_id);
  request.set_vm_id_prefix(prefix);
  request.set_count(1);
  v1::RestoreOverrides* overrides = request.add_overrides();
  overrides->set_vsock_uds_path(clone->uds_path);
  if (source.network) {
    EMBER_ASSIGN_OR_RETURN(clone->network,
                           networks_.Acquire(source.function, prefix + "-0", source.deployed));
    if (clone->network != nullptr) {
      if (!clone->network->netns_path().empty()) {
        return absl::UnimplementedError(
            "clone network: emberd cannot start a VMM in a network namespace yet");
      }
      clone->network->ApplyTo(overrides);
    }
  }
  // Listening before the VM exists: the guest announces itself as soon as it runs.
  EMBER_ASSIGN_OR_RETURN(agent_client::ReadyListener ready,
                         agent_client::ReadyListener::ForVsock(clone->uds_path));
  clone->ready.emplace(std::move(ready));
  EMBER_ASSIGN_OR_RETURN(v1::RestoreResponse restored, vms_.Restore(request));
  clone->vm_id = restored.vms(0).vm_id();
  clone->restore_us = base::MonotonicMicros() - start;
  return clone;
}

absl::Status CloneOps::Activate(Clone& clone, int timeout_ms) {
  EMBER_RETURN_IF_ERROR(vms_.Resume(clone.vm_id).status());
  if (!clone.ready.has_value()) return absl::InternalError("clone has no ready listener");
  // Polled in slices, so that a clone whose VM ended (stopped by a forced delete, crashed) is
  // given up at once rather than after the whole timeout. Accept itself only once an agent has
  // connected: cut short, it would drop the guest's one event.
  constexpr int kSliceMs = 50;
  for (int waited = 0;; waited += kSliceMs) {
    pollfd pending{clone.ready->fd(), POLLIN, 0};
    const int ready = ::poll(&pending, 1, kSliceMs);
    if (ready < 0 && errno != EINTR) return base::ErrnoError("poll", clone.ready->path());
    if (ready > 0) {
      EMBER_RETURN_IF_ERROR(clone.ready->Accept(std::max(timeout_ms - waited, kAgentReplyMs))
                                .status());
      break;
    }
    if (waited >= timeout_ms) {
      return absl::UnavailableError("clone " + clone.vm_id + ": no ready event from its agent " +
                                    "within " + std::to_string(timeout_ms) + " ms of resuming");
    }
    absl::StatusOr<v1::Vm> vm = vms_.Get(clone.vm_id);
    if (!vm.ok() || vm->state() != v1::Vm::RUNNING) {
      return absl::UnavailableError("clone " + clone.vm_id + " stopped before its agent was ready");
    }
  }
  clone.ready.reset();
  v1::PostRestoreRequest request;
  request.set_wall_clock_ns(WallClockNs());
  std::string entropy(kEntropyBytes, '\0');
  if (::getrandom(entropy.data(), entropy.size(), 0) != static_cast<ssize_t>(entropy.size())) {
    return base::ErrnoError("getrandom", "a clone's entropy");
  }
  request.set_entropy(std::move(entropy));
  agent_client::Options options;
  options.reply_timeout_ms = kAgentReplyMs;
  agent_client::AgentClient agent(agent_client::Endpoint::Vsock(clone.uds_path), options);
  EMBER_RETURN_IF_ERROR(agent.PostRestore(request).status());
  clone.activated = true;
  return absl::OkStatus();
}

absl::StatusOr<agent_client::InvokeOutcome> CloneOps::Invoke(Clone& clone, std::string payload,
                                                             std::uint32_t timeout_ms) {
  agent_client::Options options;
  // The whole wait is the invocation's timeout: AgentClient adds this to it.
  options.reply_timeout_ms = 0;
  agent_client::AgentClient agent(agent_client::Endpoint::Vsock(clone.uds_path), options);
  absl::StatusOr<agent_client::InvokeOutcome> outcome = agent.Invoke(std::move(payload),
                                                                     timeout_ms);
  if (outcome.status().code() == absl::StatusCode::kDeadlineExceeded) {
    return absl::DeadlineExceededError("the handler did not answer within " +
                                       std::to_string(timeout_ms) + " ms");
  }
  return outcome;
}

void CloneOps::Discard(Clone& clone) {
  if (!clone.vm_id.empty()) {
    if (absl::Status status = vms_.Delete(clone.vm_id, /*force=*/true);
        !status.ok() && status.code() != absl::StatusCode::kNotFound) {
      EMBER_LOG(kWarn) << "emberd: function clone " << clone.vm_id
                       << " not discarded: " << status.message();
    }
  }
  clone.ready.reset();  // removes its socket file
  ::unlink(clone.uds_path.c_str());
  clone.network.reset();
}

}  // namespace ember::emberd::functions
