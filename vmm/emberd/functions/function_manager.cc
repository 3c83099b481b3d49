#include "vmm/emberd/functions/function_manager.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "vmm/base/clock.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/emberd/functions/function_rules.h"
#include "vmm/emberd/store.h"

namespace ember::emberd::functions {
namespace {

// Resume to ready event: the guest is emulated on the development machines, so generous.
constexpr int kActivateMs = 30'000;
// How often the background work looks at the pools when nothing wakes it.
constexpr auto kMaintainEvery = std::chrono::milliseconds(50);
// How long DeleteFunction waits for invocations and refills to end (force: after their
// clones were stopped).
constexpr auto kDrainWait = std::chrono::seconds(120);
// The longest a function's socket path may be: sockaddr_un holds 107 bytes, and the ready
// listener adds "_1025" to the clone's "/c<seq>.sock".
constexpr std::size_t kMaxSocketDirLength = 107 - sizeof("/c18446744073709551615.sock_1025");

std::optional<CloneSource> ReadySource(std::mutex& mu, const v1::Function& record,
                                       const CloneSource& source) {
  std::lock_guard lock(mu);
  if (record.state() != v1::Function::READY) return std::nullopt;
  return source;
}

}  // namespace

FunctionManager::FunctionManager(FunctionOptions options, VmManager& vms, FunctionStore store)
    : options_(std::move(options)),
      vms_(vms),
      store_(std::move(store)),
      images_(options_.image_dir, options_.max_archive_bytes),
      ops_(vms, Networks(), AgentSockets(options_.jail_dir)),
      deployer_(vms, images_, store_, *options_.paths, Networks(),
                AgentSockets(options_.jail_dir), options_.rootfs) {}

absl::StatusOr<std::unique_ptr<FunctionManager>> FunctionManager::Create(FunctionOptions options,
                                                                         VmManager& vms) {
  if (options.paths == nullptr) return absl::InternalError("FunctionOptions.paths is required");
  EMBER_ASSIGN_OR_RETURN(FunctionStore store, FunctionStore::Open(options.state_dir));
  return std::unique_ptr<FunctionManager>(
      new FunctionManager(std::move(options), vms, std::move(store)));
}

FunctionManager::~FunctionManager() {
  std::vector<std::unique_ptr<Clone>> idle;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (auto& [name, entry] : functions_) {
      for (auto& clone : entry->pool.Drain()) idle.push_back(std::move(clone));
    }
  }
  maintain_cv_.notify_all();
  if (maintainer_.joinable()) maintainer_.join();
  Discard(std::move(idle));
  {
    std::lock_guard lock(discard_mu_);
    discard_stop_ = true;
  }
  discard_cv_.notify_all();
  if (discarder_.joinable()) discarder_.join();
}

absl::StatusOr<std::shared_ptr<FunctionManager::Entry>> FunctionManager::Find(
    const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = functions_.find(name);
  if (it == functions_.end()) return absl::NotFoundError("name: no function \"" + name + "\"");
  return it->second;
}

void FunctionManager::AddReady(const v1::Function& function) {
  CloneSource source;
  source.function = function.name();
  source.snapshot_id = function.snapshot_id();
  source.dir = store_.Dir(function.name());
  source.network = function.spec().network();
  for (const v1::Snapshot& snapshot : vms_.ListSnapshots("")) {
    if (snapshot.snapshot_id() == function.snapshot_id()) {
      source.memory_path = snapshot.memory_path();
    }
  }
  source.deployed = DeployConfig(function.spec(), images_.PathOf(ImageKeyOf(function)),
                                 source.dir + "/deploy.sock");
  auto entry =
      std::make_shared<Entry>(function, std::move(source), base::MonotonicMicros(), pooled_);
  std::lock_guard lock(mu_);
  functions_[function.name()] = entry;
}

absl::StatusOr<v1::Function> FunctionManager::Deploy(const v1::DeployFunctionRequest& request) {
  if (request.network() && options_.networks == nullptr) {
    return absl::FailedPreconditionError(
        "network: this emberd has no per-clone networks; deploy with network off");
  }
  if (store_.Dir(request.name()).size() > kMaxSocketDirLength) {
    return absl::FailedPreconditionError(
        "emberd's state directory is too long for the function's vsock socket paths (at most " +
        std::to_string(kMaxSocketDirLength) + " characters for " + store_.Dir(request.name()) +
        ")");
  }
  EMBER_RETURN_IF_ERROR(store_.Claim(request.name()));
  v1::Function function;
  function.set_name(request.name());
  function.set_state(v1::Function::DEPLOYING);
  *function.mutable_spec() = request;
  auto placeholder =
      std::make_shared<Entry>(function, CloneSource{}, base::MonotonicMicros(), pooled_);
  {
    std::lock_guard lock(mu_);
    functions_[request.name()] = placeholder;
  }
  absl::Status status = deployer_.Deploy(request, &function);
  if (!status.ok()) {
    {
      std::lock_guard lock(mu_);
      functions_.erase(request.name());
    }
    if (absl::Status removed = RemoveArtifacts(function, /*holds_image=*/true); !removed.ok()) {
      EMBER_LOG(kWarn) << "emberd: function " << request.name()
                       << ": after a failed deploy: " << removed.message();
    }
    return status;
  }
  AddReady(function);
  maintain_cv_.notify_all();
  return function;
}

absl::Status FunctionManager::Serve(Entry& entry, std::unique_ptr<Clone>& clone,
                                    const v1::FunctionInvokeRequest& request,
                                    InvokeResult* result) {
  if (clone == nullptr) {
    std::optional<CloneSource> source = ReadySource(entry.mu, entry.record, entry.source);
    if (!source) return absl::FailedPreconditionError("the function is not ready");
    EMBER_ASSIGN_OR_RETURN(clone, ops_.Restore(*source, next_seq_++, /*cold=*/true));
    result->timings.set_restore_us(clone->restore_us);
  }
  result->vm_id = clone->vm_id;
  {
    std::lock_guard lock(entry.mu);
    entry.busy_vms.insert(clone->vm_id);
  }
  // After the insert: a forced delete either sees this clone among the busy ones (and stops
  // it) or has drained the pool before this look.
  if (entry.pool.Draining()) return absl::AbortedError("the function was deleted (force)");
  if (!clone->activated) {
    const std::uint64_t start = base::MonotonicMicros();
    EMBER_RETURN_IF_ERROR(ops_.Activate(*clone, kActivateMs));
    result->timings.set_resume_to_ready_us(base::MonotonicMicros() - start);
  }
  const std::uint64_t start = base::MonotonicMicros();
  EMBER_ASSIGN_OR_RETURN(agent_client::InvokeOutcome outcome,
                         ops_.Invoke(*clone, request.payload(), InvokeTimeoutMs(request)));
  result->timings.set_handler_us(base::MonotonicMicros() - start);
  result->output = std::move(outcome.output);
  return absl::OkStatus();
}

absl::StatusOr<InvokeResult> FunctionManager::Invoke(const v1::FunctionInvokeRequest& request,
                                                     std::uint64_t arrival_us) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(request.name()));
  {
    std::lock_guard lock(entry->mu);
    if (entry->record.state() != v1::Function::READY) {
      return absl::FailedPreconditionError("function \"" + request.name() +
                                           "\" is still deploying");
    }
  }
  if (in_flight_.fetch_add(1) >= options_.max_in_flight) {
    in_flight_.fetch_sub(1);
    entry->pool.CountRejected();
    return absl::ResourceExhaustedError("emberd runs its host-wide limit of " +
                                        std::to_string(options_.max_in_flight) +
                                        " invocations (--fn-max-in-flight)");
  }
  struct Slot {
    std::atomic<std::uint32_t>& count;
    ~Slot() { count.fetch_sub(1); }
  } slot{in_flight_};
  absl::StatusOr<ClonePool::Admission> admission =
      entry->pool.Admit(base::MonotonicMicros());
  if (!admission.ok()) {
    return absl::Status(admission.status().code(), "function \"" + request.name() + "\": " +
                                                       std::string(admission.status().message()));
  }
  InvokeResult result;
  result.timings.set_pool_hit(admission->pool_hit);
  std::unique_ptr<Clone> clone = std::move(admission->clone);
  absl::Status status = Serve(*entry, clone, request, &result);
  const std::uint64_t now = base::MonotonicMicros();
  result.timings.set_total_us(now - arrival_us);
  if (clone != nullptr) {
    std::lock_guard lock(entry->mu);
    entry->busy_vms.erase(clone->vm_id);
  }
  {
    HandOff handing(*this);  // the slot goes before the clone reaches the discard queue
    if (std::unique_ptr<Clone> spent =
            entry->pool.Finish(std::move(clone), status.code(), now, result.timings.total_us())) {
      Discard(std::move(spent));
    }
  }
  maintain_cv_.notify_all();  // a pooled clone was taken: refill
  if (!status.ok()) {
    return absl::Status(status.code(), "function \"" + request.name() + "\": " +
                                           std::string(status.message()));
  }
  return result;
}

std::vector<v1::Function> FunctionManager::List(const std::string& name) {
  std::vector<std::shared_ptr<Entry>> entries;
  {
    std::lock_guard lock(mu_);
    for (auto& [key, entry] : functions_) {
      if (name.empty() || key == name) entries.push_back(entry);
    }
  }
  std::vector<v1::Function> functions;
  for (auto& entry : entries) {
    v1::Function function;
    {
      std::lock_guard lock(entry->mu);
      function = entry->record;
    }
    entry->pool.Describe(&function);
    functions.push_back(std::move(function));
  }
  return functions;
}

absl::StatusOr<v1::Function> FunctionManager::Update(const v1::UpdateFunctionRequest& request) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(request.name()));
  v1::Function function;
  {
    std::lock_guard lock(entry->mu);
    if (entry->record.state() != v1::Function::READY) {
      return absl::FailedPreconditionError("function \"" + request.name() +
                                           "\" is still deploying");
    }
    *entry->record.mutable_spec()->mutable_pool() = request.pool();
    EMBER_RETURN_IF_ERROR(store_.Save(entry->record));
    entry->pool.Update(request.pool());
    function = entry->record;
  }
  entry->pool.Describe(&function);
  maintain_cv_.notify_all();
  return function;
}

absl::Status FunctionManager::Delete(const std::string& name, bool force) {
  EMBER_ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(name));
  {
    std::lock_guard lock(entry->mu);
    if (entry->record.state() != v1::Function::READY) {
      return absl::FailedPreconditionError("function \"" + name + "\" is still deploying");
    }
  }
  if (!force && entry->pool.Busy() > 0) {
    return absl::FailedPreconditionError(
        "function \"" + name + "\" has " + std::to_string(entry->pool.Busy()) +
        " invocations running; wait for them or set force");
  }
  {
    std::lock_guard lock(mu_);
    auto it = functions_.find(name);
    if (it == functions_.end() || it->second != entry) {
      return absl::NotFoundError("name: no function \"" + name + "\"");
    }
    functions_.erase(it);
  }
  std::vector<std::unique_ptr<Clone>> idle = entry->pool.Drain();
  if (force) {
    std::set<std::string> busy;
    {
      std::lock_guard lock(entry->mu);
      busy = entry->busy_vms;
    }
    // Their invocations fail and give the clones back, which the drained pool discards.
    for (const std::string& vm_id : busy) (void)vms_.Stop(vm_id, std::chrono::milliseconds(1000));
  }
  for (auto& clone : idle) ops_.Discard(*clone);
  const auto deadline = std::chrono::steady_clock::now() + kDrainWait;
  while ((entry->pool.Busy() > 0 || entry->pool.Refilling() > 0) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  {
    // The discard thread may still hold clones of this function; the snapshot outlives them.
    std::unique_lock lock(discard_mu_);
    discard_cv_.wait_for(lock, kDrainWait, [&] { return discards_.empty() && discarding_ == 0; });
  }
  v1::Function function;
  {
    std::lock_guard lock(entry->mu);
    function = entry->record;
  }
  EMBER_RETURN_IF_ERROR(RemoveArtifacts(function, /*holds_image=*/true));
  EMBER_LOG(kInfo) << "emberd: function " << name << " deleted";
  return absl::OkStatus();
}

absl::Status FunctionManager::RemoveArtifacts(const v1::Function& function, bool holds_image) {
  absl::Status status;
  if (!function.snapshot_id().empty()) {
    status = vms_.DeleteSnapshot(function.snapshot_id());
    if (status.code() == absl::StatusCode::kNotFound) status = absl::OkStatus();
  }
  if (holds_image && !function.image_sha256().empty()) images_.Release(ImageKeyOf(function));
  if (!status.ok()) {
    // The record stays, so that the next start tries again.
    return absl::Status(status.code(), "function \"" + function.name() +
                                           "\": its snapshot " + function.snapshot_id() +
                                           " was not removed: " + std::string(status.message()));
  }
  return store_.Remove(function.name());
}

FunctionManager::HandOff::HandOff(FunctionManager& manager) : manager_(manager) {
  std::lock_guard lock(manager_.discard_mu_);
  ++manager_.discarding_;
}

FunctionManager::HandOff::~HandOff() {
  {
    std::lock_guard lock(manager_.discard_mu_);
    --manager_.discarding_;
  }
  manager_.discard_cv_.notify_all();
}

void FunctionManager::Discard(std::unique_ptr<Clone> clone) {
  {
    std::lock_guard lock(discard_mu_);
    discards_.push_back(std::move(clone));
  }
  discard_cv_.notify_all();
}

void FunctionManager::Discard(std::vector<std::unique_ptr<Clone>> clones) {
  if (clones.empty()) return;
  {
    std::lock_guard lock(discard_mu_);
    for (auto& clone : clones) discards_.push_back(std::move(clone));
  }
  discard_cv_.notify_all();
}

void FunctionManager::DiscardLoop() {
  std::unique_lock lock(discard_mu_);
  while (true) {
    discard_cv_.wait(lock, [&] { return discard_stop_ || !discards_.empty(); });
    if (discards_.empty()) return;  // stopping, and nothing left
    std::unique_ptr<Clone> clone = std::move(discards_.front());
    discards_.pop_front();
    ++discarding_;
    lock.unlock();
    ops_.Discard(*clone);
    clone.reset();
    lock.lock();
    --discarding_;
    discard_cv_.notify_all();
  }
}

void FunctionManager::Maintain() {
  std::vector<std::shared_ptr<Entry>> entries;
  {
    std::lock_guard lock(mu_);
    for (auto& [name, entry] : functions_) entries.push_back(entry);
  }
  for (auto& entry : entries) {
    {
      HandOff handing(*this);
      Discard(entry->pool.Expire(base::MonotonicMicros()));
    }
    std::optional<CloneSource> source = ReadySource(entry->mu, entry->record, entry->source);
    if (!source || !entry->pool.BeginRefill(base::MonotonicMicros())) continue;
    absl::StatusOr<std::unique_ptr<Clone>> clone = ops_.Restore(*source, next_seq_++);
    if (!clone.ok()) {
      EMBER_LOG(kWarn) << "emberd: function " << source->function
                       << ": pool refill failed: " << clone.status().message();
    }
    HandOff handing(*this);
    if (std::unique_ptr<Clone> back =
            entry->pool.EndRefill(clone.ok() ? std::move(*clone) : nullptr)) {
      Discard(std::move(back));
    }
  }
}

void FunctionManager::MaintainLoop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    Maintain();
    lock.lock();
    maintain_cv_.wait_for(lock, kMaintainEvery);
  }
}

void FunctionManager::RemoveCloneVms(const std::vector<v1::Function>& functions) {
  for (const v1::Vm& vm : vms_.List()) {
    for (const v1::Function& function : functions) {
      const std::string prefix = VmIdPrefix(function.name());
      if (vm.vm_id().rfind(prefix, 0) != 0) continue;
      const bool deploy_vm = vm.vm_id() == DeployVmId(function.name());
      const bool clone =
          !function.snapshot_id().empty() && vm.restored_from() == function.snapshot_id();
      if (!deploy_vm && !clone) continue;
      // Keep later sequence numbers clear of the old clones' ids.
      const std::uint64_t seq = std::strtoull(vm.vm_id().c_str() + prefix.size(), nullptr, 10);
      if (seq >= next_seq_) next_seq_ = seq + 1;
      if (absl::Status status = vms_.Delete(vm.vm_id(), /*force=*/true); !status.ok()) {
        EMBER_LOG(kWarn) << "emberd: leftover function VM " << vm.vm_id()
                         << " not removed: " << status.message();
      } else {
        EMBER_LOG(kInfo) << "emberd: removed leftover function VM " << vm.vm_id();
      }
    }
  }
  // Their sockets (the VMMs and ready listeners are gone).
  for (const v1::Function& function : functions) {
    std::error_code error;
    for (auto it = std::filesystem::directory_iterator(store_.Dir(function.name()), error);
         !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
      if (it->path().filename().string().find(".sock") != std::string::npos) {
        ::unlink(it->path().c_str());
      }
    }
  }
}

absl::Status FunctionManager::Recover() {
  std::vector<v1::Function> functions = store_.LoadAll();
  RemoveCloneVms(functions);
  for (const v1::Function& function : functions) {
    if (function.state() == v1::Function::READY) {
      images_.Acquire(ImageKeyOf(function));
      AddReady(function);
      EMBER_LOG(kInfo) << "emberd: function " << function.name() << " recovered";
      continue;
    }
    EMBER_LOG(kWarn) << "emberd: function " << function.name()
                     << " was still deploying when emberd stopped; removing it";
    if (absl::Status status = RemoveArtifacts(function, /*holds_image=*/false); !status.ok()) {
      EMBER_LOG(kWarn) << "emberd: " << status.message();
    }
  }
  images_.RemoveUnreferenced();  // unused images, copies cut short
  maintainer_ = std::thread([this] { MaintainLoop(); });
  discarder_ = std::thread([this] { DiscardLoop(); });
  return absl::OkStatus();
}

}  // namespace ember::emberd::functions
