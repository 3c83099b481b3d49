#include "vmm/emberd/functions/deployer.h"

#include <unistd.h>

#include "vmm/agent_client/agent_client.h"
#include "vmm/base/clock.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/emberd/functions/function_rules.h"

namespace ember::emberd::functions {
namespace {

constexpr int kAgentReplyMs = 30'000;
// One try of Ready while the deploy VM boots: the vsock handshake waits for the guest.
constexpr int kAgentConnectMs = 1'000;

std::uint64_t Since(std::uint64_t start_us) { return base::MonotonicMicros() - start_us; }

}  // namespace

std::string VmIdPrefix(const std::string& function) { return "fn-" + function + "-"; }
std::string DeployVmId(const std::string& function) { return VmIdPrefix(function) + "deploy"; }

std::string ImageKeyOf(const v1::Function& function) {
  if (function.image_sha256().empty()) return "";
  return ImageKey(!function.spec().oci_archive_path().empty(), function.image_sha256());
}

absl::Status Deployer::Deploy(const v1::DeployFunctionRequest& request, v1::Function* function) {
  const std::uint64_t start = base::MonotonicMicros();
  function->set_state(v1::Function::DEPLOYING);
  *function->mutable_spec() = request;
  function->set_created_unix_ms(NowUnixMs());
  EMBER_RETURN_IF_ERROR(store_.Save(*function));
  std::string sha;
  if (!request.oci_archive_path().empty()) {
    if (rootfs_ == nullptr) {
      return absl::FailedPreconditionError(
          "oci_archive_path: this emberd has no rootfs builder (ember-rootfs beside it); build "
          "the image with `ember-rootfs ARCHIVE IMAGE` and give root_image_path");
    }
    EMBER_ASSIGN_OR_RETURN(sha, images_.AddOciArchive(paths_, *rootfs_,
                                                      request.oci_archive_path()));
  } else {
    EMBER_ASSIGN_OR_RETURN(sha, images_.Add(paths_, "root_image_path",
                                            request.root_image_path()));
  }
  function->set_image_sha256(sha);
  EMBER_RETURN_IF_ERROR(store_.Save(*function));
  const std::string uds = store_.Dir(request.name()) + "/deploy.sock";
  const std::string image = images_.PathOf(ImageKeyOf(*function));
  EMBER_RETURN_IF_ERROR(BootAndSnapshot(
      request, DeployConfig(request, image, sockets_.ConfigPath(uds)), function));
  ::unlink(uds.c_str());
  function->mutable_deploy()->set_total_us(Since(start));
  function->set_state(v1::Function::READY);
  EMBER_RETURN_IF_ERROR(store_.Save(*function));
  EMBER_LOG(kInfo) << "emberd: function " << request.name() << " deployed in "
                   << function->deploy().total_us() << " us (snapshot "
                   << function->snapshot_id() << ")";
  return absl::OkStatus();
}

absl::Status Deployer::BootAndSnapshot(const v1::DeployFunctionRequest& request,
                                       const v1::VmConfig& config, v1::Function* function) {
  const std::string vm_id = DeployVmId(request.name());
  const std::string unjailed = store_.Dir(request.name()) + "/deploy.sock";
  if (!sockets_.jailed()) ::unlink(unjailed.c_str());
  std::uint64_t step = base::MonotonicMicros();
  // Released after the VM is gone (declared before vm_gone).
  std::unique_ptr<CloneNetworkLease> network;
  std::string netns_path;
  if (request.network()) {
    EMBER_ASSIGN_OR_RETURN(network, networks_.Acquire(request.name(), vm_id, config));
    if (network != nullptr) netns_path = network->netns_path();
  }
  EMBER_RETURN_IF_ERROR(vms_.CreateVm(vm_id, config, netns_path).status());
  // From here on the VM exists: whatever happens, it goes.
  struct VmGone {
    VmManager& vms;
    const std::string& id;
    ~VmGone() { (void)vms.Delete(id, /*force=*/true); }
  } vm_gone{vms_, vm_id};
  // Built: its vsock socket exists.
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd socket,
                         OpenAgentSocket(sockets_.HostPath(vm_id, unjailed)));
  const agent_client::Endpoint agent = agent_client::Endpoint::Vsock(AgentEndpointPath(socket));
  EMBER_RETURN_IF_ERROR(vms_.Start(vm_id, base::MonotonicMicros()).status());
  const int ready_ms = static_cast<int>(
      request.ready_timeout_ms() == 0 ? kDefaultReadyTimeoutMs : request.ready_timeout_ms());
  agent_client::Options options;
  options.connect_timeout_ms = kAgentConnectMs;
  options.reply_timeout_ms = kAgentReplyMs;
  agent_client::AgentClient client(agent, options);
  absl::Status ready = UntilAgentAnswers(
      [&] { return client.Ready().status(); }, ready_ms, [&]() -> absl::Status {
        absl::StatusOr<v1::Vm> vm = vms_.Get(vm_id);
        if (vm.ok() && vm->state() == v1::Vm::RUNNING) return absl::OkStatus();
        return absl::UnavailableError("the deploy VM stopped");
      });
  if (!ready.ok()) {
    return absl::Status(ready.code(), "the deploy VM's agent did not answer Ready: " +
                                          std::string(ready.message()));
  }
  function->mutable_deploy()->set_boot_to_ready_us(Since(step));
  step = base::MonotonicMicros();
  EMBER_RETURN_IF_ERROR(WarmUp(request, agent));
  function->mutable_deploy()->set_warmup_us(Since(step));
  step = base::MonotonicMicros();
  EMBER_RETURN_IF_ERROR(vms_.Pause(vm_id).status());
  v1::CreateSnapshotRequest snap;
  snap.set_vm_id(vm_id);
  snap.set_type(v1::CreateSnapshotRequest::FULL);
  EMBER_ASSIGN_OR_RETURN(v1::Snapshot snapshot, vms_.CreateSnapshot(snap));
  function->mutable_deploy()->set_snapshot_us(Since(step));
  function->set_snapshot_id(snapshot.snapshot_id());
  return absl::OkStatus();
}

absl::Status Deployer::WarmUp(const v1::DeployFunctionRequest& request,
                              const agent_client::Endpoint& endpoint) {
  agent_client::Options options;
  options.reply_timeout_ms = kAgentReplyMs;
  agent_client::AgentClient agent(endpoint, options);
  v1::StartHandlerRequest start;
  for (const std::string& arg : request.handler_argv()) start.add_argv(arg);
  for (const std::string& env : request.env()) start.add_env(env);
  absl::Status started = agent.StartHandler(start);
  // An agent without StartHandler starts its handler at the first Invoke (agent.proto); only
  // a handler the request names must start here.
  if (started.code() == absl::StatusCode::kUnimplemented && request.handler_argv().empty() &&
      request.env().empty()) {
    started = absl::OkStatus();
  }
  if (!started.ok()) {
    return absl::Status(started.code(), "StartHandler: " + std::string(started.message()));
  }
  for (int i = 0; i < request.warmup_payloads_size(); ++i) {
    absl::StatusOr<agent_client::InvokeOutcome> outcome =
        agent.Invoke(request.warmup_payloads(i), kDefaultInvokeTimeoutMs);
    if (!outcome.ok()) {
      return absl::Status(outcome.status().code(),
                          "warmup_payloads[" + std::to_string(i) +
                              "]: " + std::string(outcome.status().message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace ember::emberd::functions
