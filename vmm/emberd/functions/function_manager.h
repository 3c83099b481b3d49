#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/api.pb.h"
#include "vmm/base/path_rules.h"
#include "vmm/emberd/functions/clone.h"
#include "vmm/emberd/functions/clone_network.h"
#include "vmm/emberd/functions/clone_pool.h"
#include "vmm/emberd/functions/deployer.h"
#include "vmm/emberd/functions/function_store.h"
#include "vmm/emberd/functions/image_cache.h"
#include "vmm/emberd/vm_manager.h"

namespace ember::emberd::functions {

struct FunctionOptions {
  std::string state_dir;
  std::string image_dir;              // MakeImageDir's
  // Invocations in flight on the whole host; beyond it Invoke is RESOURCE_EXHAUSTED at once.
  std::uint32_t max_in_flight = 64;
  // The largest OCI archive a deploy copies (ImageCache).
  std::uint64_t max_archive_bytes = ImageCache::kDefaultMaxArchiveBytes;
  // Clones kept ready (paused and warm) across all functions' pools; see PooledClones.
  std::uint32_t max_pooled = 256;
  // VmManager's ManagerOptions::jail_dir: where a jailed VM's root is; empty when unjailed.
  std::string jail_dir;
  const base::PathRules* paths = nullptr;  // the API's rules for the paths a request names
  // Per-clone networks; null: none can be had (a function with network on is refused).
  CloneNetworks* networks = nullptr;
  // Builds images from OCI archives; null: deploys from one are refused.
  RootfsBuilder* rootfs = nullptr;
};

struct InvokeResult {
  std::string output;
  v1::InvokeTimings timings;
  std::string vm_id;
};

// The functions emberd keeps: their records, their pools of clones and the background work
// that keeps the pools filled and trimmed (two threads: one restores and expires, one
// discards). The gRPC service calls it from its threads; `vms` outlives it.
class FunctionManager {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<FunctionManager>> Create(
      FunctionOptions options, VmManager& vms);
  // Stops the background threads and discards the idle clones.
  ~FunctionManager();

  // After VmManager::Recover: reloads the READY functions; removes what a deploy cut short
  // left, every clone of a previous emberd (whatever it was doing: its invocation's client
  // lost its call with that emberd) and images no function uses. Starts the background work.
  [[nodiscard]] absl::Status Recover();

  [[nodiscard]] absl::StatusOr<v1::Function> Deploy(const v1::DeployFunctionRequest& request);
  // `arrival_us`: CLOCK_MONOTONIC µs at which the request arrived (total_us's start).
  [[nodiscard]] absl::StatusOr<InvokeResult> Invoke(const v1::FunctionInvokeRequest& request,
                                                    std::uint64_t arrival_us);
  [[nodiscard]] std::vector<v1::Function> List(const std::string& name);
  [[nodiscard]] absl::StatusOr<v1::Function> Update(const v1::UpdateFunctionRequest& request);
  [[nodiscard]] absl::Status Delete(const std::string& name, bool force);

 private:
  struct Entry {
    Entry(v1::Function f, CloneSource s, std::uint64_t now_us, PooledClones& pooled)
        : record(std::move(f)), source(std::move(s)), pool(record.spec().pool(), now_us, &pooled) {}
    std::mutex mu;
    v1::Function record;                // guarded by mu (pool settings: the pool's)
    CloneSource source;                 // immutable once READY
    ClonePool pool;
    std::set<std::string> busy_vms;     // guarded by mu: clones serving an invocation
  };

  FunctionManager(FunctionOptions options, VmManager& vms, FunctionStore store);
  // options_.networks, or none.
  [[nodiscard]] CloneNetworks& Networks() {
    return options_.networks != nullptr ? *options_.networks : no_networks_;
  }
  [[nodiscard]] absl::StatusOr<std::shared_ptr<Entry>> Find(const std::string& name);
  void AddReady(const v1::Function& function);
  // Restores (if `clone` is null), activates and invokes; fills the timings it measured.
  [[nodiscard]] absl::Status Serve(Entry& entry, std::unique_ptr<Clone>& clone,
                                   const v1::FunctionInvokeRequest& request,
                                   InvokeResult* result);
  // Removes a function's snapshot and its record, and releases its image's reference if
  // `holds_image` (it does unless it is a record a previous emberd left).
  [[nodiscard]] absl::Status RemoveArtifacts(const v1::Function& function, bool holds_image);
  void RemoveCloneVms(const std::vector<v1::Function>& functions);
  // Held while a clone leaves its pool for the discard queue (ClonePool::Finish, Expire,
  // EndRefill, then Discard): counted in discarding_ all along, so that a DeleteFunction that
  // sees the pool idle also waits for that clone's discard before it removes the snapshot the
  // clone's VM still maps.
  class HandOff {
   public:
    explicit HandOff(FunctionManager& manager);
    HandOff(const HandOff&) = delete;
    HandOff& operator=(const HandOff&) = delete;
    ~HandOff();

   private:
    FunctionManager& manager_;
  };
  // To the discard thread.
  void Discard(std::unique_ptr<Clone> clone);
  void Discard(std::vector<std::unique_ptr<Clone>> clones);
  void MaintainLoop();
  void DiscardLoop();
  // One pass of MaintainLoop: expiries, then at most one refill per function.
  void Maintain();

  FunctionOptions options_;
  VmManager& vms_;
  FunctionStore store_;
  ImageCache images_;
  NoCloneNetworks no_networks_;
  CloneOps ops_;
  Deployer deployer_;
  std::atomic<std::uint64_t> next_seq_{1};
  std::atomic<std::uint32_t> in_flight_{0};  // host-wide invocations

  PooledClones pooled_{options_.max_pooled};  // before functions_: their pools use it
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> functions_;  // guarded by mu_
  std::condition_variable maintain_cv_;                       // with mu_
  bool stopping_ = false;                                     // guarded by mu_

  std::mutex discard_mu_;
  std::condition_variable discard_cv_;
  std::deque<std::unique_ptr<Clone>> discards_;  // guarded by discard_mu_
  // guarded by discard_mu_: clones being discarded or handed to discards_ (HandOff)
  std::uint32_t discarding_ = 0;
  bool discard_stop_ = false;                    // guarded by discard_mu_

  std::thread maintainer_;
  std::thread discarder_;
};

}  // namespace ember::emberd::functions
