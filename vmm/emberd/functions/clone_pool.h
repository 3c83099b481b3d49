#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/api.pb.h"
#include "vmm/emberd/functions/clone.h"

namespace ember::emberd::functions {

// The total_us of a function's last successful invocations, for p50/p99.
class LatencyWindow {
 public:
  void Add(std::uint64_t us);
  // The q-quantile (0..1) of what the window holds; 0 when empty.
  [[nodiscard]] std::uint64_t Quantile(double q) const;

 private:
  static constexpr std::size_t kSize = 1024;
  std::array<std::uint64_t, kSize> samples_{};
  std::size_t count_ = 0;  // added so far (the window holds min(count_, kSize))
};

// The clones kept ready across all functions' pools (paused, warm, and refills on their way)
// against emberd --fn-max-pooled: pooled clones are VMs, and without a host-wide cap a few
// functions with large min_warm would hold every VM emberd's --max-vms allows. Every pool
// takes a place before it keeps a clone and gives it back as the clone leaves. Any thread.
class PooledClones {
 public:
  explicit PooledClones(std::uint32_t limit) : limit_(limit) {}

  // One more place, unless all `limit` are taken.
  [[nodiscard]] bool TryTake();
  void Give(std::size_t count);
  [[nodiscard]] std::uint32_t Count() const { return count_.load(); }
  [[nodiscard]] std::uint32_t limit() const { return limit_; }

 private:
  const std::uint32_t limit_;
  std::atomic<std::uint32_t> count_{0};
};

// One function's clones and its invocation accounting: which clone serves an invocation, what
// happens to it afterwards, and what the background work owes the pool. It only moves clones
// between its lists and its callers; restoring, activating and discarding them is the
// caller's (FunctionManager, through CloneOps), outside its lock. Any thread.
class ClonePool {
 public:
  // `now_us`: the start of the idle time that scales the pool to zero. The clones it keeps
  // count against `pooled` (borrowed, outlives it; null: no host-wide cap).
  ClonePool(const v1::FunctionPool& settings, std::uint64_t now_us, PooledClones* pooled = nullptr)
      : settings_(settings), last_invoke_us_(now_us), pooled_(pooled) {}
  ~ClonePool();
  ClonePool(const ClonePool&) = delete;
  ClonePool& operator=(const ClonePool&) = delete;

  // An admitted invocation: the clone to serve it (warm, or paused and to be activated), or
  // null when none was ready and the caller restores one.
  struct Admission {
    std::unique_ptr<Clone> clone;
    bool pool_hit = false;
  };
  // Takes one of the function's max_concurrency slots (RESOURCE_EXHAUSTED at once when none is
  // free) and the best clone: a warm one (most recently used first), else a paused one.
  [[nodiscard]] absl::StatusOr<Admission> Admit(std::uint64_t now_us);
  // Ends an admitted invocation and gives its slot back. Returns the clone when the caller must
  // discard it (failed, no keep-warm, the pool is being drained, or the host's pooled clones
  // are at their cap); otherwise keeps it warm until now + keep_warm_ms and returns null.
  [[nodiscard]] std::unique_ptr<Clone> Finish(std::unique_ptr<Clone> clone, absl::StatusCode code,
                                              std::uint64_t now_us, std::uint64_t total_us);
  // Counts an invocation refused before admission (the host-wide limit).
  void CountRejected();

  // Clones whose time is up: warm ones past keep-warm, and every idle one once the function
  // has had no invocation for idle_to_zero_ms. The caller discards them.
  [[nodiscard]] std::vector<std::unique_ptr<Clone>> Expire(std::uint64_t now_us);
  // Whether the paused pool is short of min_warm (and not scaled to zero), and the host's
  // pooled clones below their cap; if so, counts one refill in progress (and takes its place
  // in the cap), which the caller ends with EndRefill.
  [[nodiscard]] bool BeginRefill(std::uint64_t now_us);
  // Adds a restored clone to the paused pool (null: the restore failed). Returns it back when
  // the pool is draining: the caller discards it.
  [[nodiscard]] std::unique_ptr<Clone> EndRefill(std::unique_ptr<Clone> clone);

  // From now on nothing is admitted or kept; returns every idle clone. Busy ones come back
  // through Finish.
  [[nodiscard]] std::vector<std::unique_ptr<Clone>> Drain();
  // Whether Drain was called: an invocation in progress gives up.
  [[nodiscard]] bool Draining() const;
  // Invocations in flight and refills in progress.
  [[nodiscard]] std::uint32_t Busy() const;
  [[nodiscard]] std::uint32_t Refilling() const;

  void Update(const v1::FunctionPool& settings);
  // Counters and clone counts into `function`.
  void Describe(v1::Function* function) const;

 private:
  // Gives `count` places back to pooled_ (under mu_).
  void GiveBack(std::size_t count);

  mutable std::mutex mu_;
  v1::FunctionPool settings_;                  // guarded by mu_
  std::deque<std::unique_ptr<Clone>> paused_;  // guarded by mu_
  std::deque<std::unique_ptr<Clone>> warm_;    // guarded by mu_; most recently used last
  std::uint32_t busy_ = 0;                     // guarded by mu_
  std::uint32_t refilling_ = 0;                // guarded by mu_
  bool draining_ = false;                      // guarded by mu_
  std::uint64_t last_invoke_us_;               // guarded by mu_
  v1::FunctionCounters counters_;              // guarded by mu_
  LatencyWindow latency_;                      // guarded by mu_
  PooledClones* const pooled_;                 // a place for each clone in paused_, warm_
                                               // and refilling_
};

}  // namespace ember::emberd::functions
