#include "vmm/emberd/functions/clone_pool.h"

#include <algorithm>
#include <cstdlib>

#include "vmm/emberd/functions/function_rules.h"

namespace ember::emberd::functions {

void LatencyWindow::Add(std::uint64_t us) { samples_[count_++ % kSize] = us; }

std::uint64_t LatencyWindow::Quantile(double q) const {
  const std::size_t n = std::min(count_, kSize);
  if (n == 0) return 0;
  std::vector<std::uint64_t> sorted(samples_.begin(),
                                    samples_.begin() + static_cast<std::ptrdiff_t>(n));
  std::sort(sorted.begin(), sorted.end());
  auto index = static_cast<std::size_t>(q * static_cast<double>(n - 1) + 0.5);
  return sorted[std::min(index, n - 1)];
}

bool PooledClones::TryTake() {
  std::uint32_t count = count_.load();
  do {
    if (count >= limit_) return false;
  } while (!count_.compare_exchange_weak(count, count + 1));
  return true;
}

void PooledClones::Give(std::size_t count) {
  const auto given = static_cast<std::uint32_t>(count);
  const std::uint32_t before = count_.fetch_sub(given);
  if (before < given) std::abort();  // more given back than taken: the accounting is broken
}

ClonePool::~ClonePool() {
  if (pooled_ != nullptr) pooled_->Give(paused_.size() + warm_.size() + refilling_);
}

void ClonePool::GiveBack(std::size_t count) {
  if (pooled_ != nullptr && count > 0) pooled_->Give(count);
}

absl::StatusOr<ClonePool::Admission> ClonePool::Admit(std::uint64_t now_us) {
  std::lock_guard lock(mu_);
  if (draining_) return absl::NotFoundError("the function is being deleted");
  const std::uint32_t limit = Concurrency(settings_);
  if (busy_ >= limit) {
    counters_.set_rejected(counters_.rejected() + 1);
    return absl::ResourceExhaustedError("the function runs its max_concurrency of " +
                                        std::to_string(limit) + " invocations");
  }
  ++busy_;
  last_invoke_us_ = now_us;
  Admission admission;
  if (!warm_.empty()) {
    admission.clone = std::move(warm_.back());
    warm_.pop_back();
  } else if (!paused_.empty()) {
    admission.clone = std::move(paused_.front());
    paused_.pop_front();
  }
  admission.pool_hit = admission.clone != nullptr;
  if (admission.pool_hit) GiveBack(1);
  if (admission.pool_hit) counters_.set_pool_hits(counters_.pool_hits() + 1);
  return admission;
}

std::unique_ptr<Clone> ClonePool::Finish(std::unique_ptr<Clone> clone, absl::StatusCode code,
                                         std::uint64_t now_us, std::uint64_t total_us) {
  std::lock_guard lock(mu_);
  --busy_;
  counters_.set_invocations(counters_.invocations() + 1);
  if (code == absl::StatusCode::kOk) {
    latency_.Add(total_us);
  } else {
    counters_.set_failures(counters_.failures() + 1);
    if (code == absl::StatusCode::kDeadlineExceeded) counters_.set_timeouts(counters_.timeouts() + 1);
  }
  if (clone == nullptr || code != absl::StatusCode::kOk || draining_ ||
      settings_.keep_warm_ms() == 0 || !clone->activated ||
      (pooled_ != nullptr && !pooled_->TryTake())) {
    return clone;
  }
  clone->warm_until_us = now_us + std::uint64_t{settings_.keep_warm_ms()} * 1000;
  warm_.push_back(std::move(clone));
  return nullptr;
}

void ClonePool::CountRejected() {
  std::lock_guard lock(mu_);
  counters_.set_rejected(counters_.rejected() + 1);
}

std::vector<std::unique_ptr<Clone>> ClonePool::Expire(std::uint64_t now_us) {
  std::lock_guard lock(mu_);
  std::vector<std::unique_ptr<Clone>> expired;
  const bool idle = settings_.idle_to_zero_ms() != 0 && busy_ == 0 &&
                    now_us - last_invoke_us_ >= std::uint64_t{settings_.idle_to_zero_ms()} * 1000;
  for (auto it = warm_.begin(); it != warm_.end();) {
    if (idle || (*it)->warm_until_us <= now_us) {
      expired.push_back(std::move(*it));
      it = warm_.erase(it);
    } else {
      ++it;
    }
  }
  while (idle && !paused_.empty()) {
    expired.push_back(std::move(paused_.front()));
    paused_.pop_front();
  }
  GiveBack(expired.size());
  return expired;
}

bool ClonePool::BeginRefill(std::uint64_t now_us) {
  std::lock_guard lock(mu_);
  if (draining_ || paused_.size() + refilling_ >= settings_.min_warm()) return false;
  // Scaled to zero: idle_to_zero_ms without an invocation (since the last one, or since the
  // pool was made).
  if (settings_.idle_to_zero_ms() != 0 &&
      now_us - last_invoke_us_ >= std::uint64_t{settings_.idle_to_zero_ms()} * 1000) {
    return false;
  }
  if (pooled_ != nullptr && !pooled_->TryTake()) return false;  // waits for a place
  ++refilling_;
  return true;
}

std::unique_ptr<Clone> ClonePool::EndRefill(std::unique_ptr<Clone> clone) {
  std::lock_guard lock(mu_);
  --refilling_;
  if (clone == nullptr || draining_) {
    GiveBack(1);
    return clone;
  }
  paused_.push_back(std::move(clone));
  return nullptr;
}

std::vector<std::unique_ptr<Clone>> ClonePool::Drain() {
  std::lock_guard lock(mu_);
  draining_ = true;
  std::vector<std::unique_ptr<Clone>> idle;
  for (auto* list : {&paused_, &warm_}) {
    for (auto& clone : *list) idle.push_back(std::move(clone));
    list->clear();
  }
  GiveBack(idle.size());
  return idle;
}

bool ClonePool::Draining() const {
  std::lock_guard lock(mu_);
  return draining_;
}

std::uint32_t ClonePool::Busy() const {
  std::lock_guard lock(mu_);
  return busy_;
}

std::uint32_t ClonePool::Refilling() const {
  std::lock_guard lock(mu_);
  return refilling_;
}

void ClonePool::Update(const v1::FunctionPool& settings) {
  std::lock_guard lock(mu_);
  settings_ = settings;
}

void ClonePool::Describe(v1::Function* function) const {
  std::lock_guard lock(mu_);
  *function->mutable_spec()->mutable_pool() = settings_;
  *function->mutable_counters() = counters_;
  function->mutable_counters()->set_latency_p50_us(latency_.Quantile(0.5));
  function->mutable_counters()->set_latency_p99_us(latency_.Quantile(0.99));
  function->set_paused_clones(static_cast<std::uint32_t>(paused_.size()));
  function->set_warm_clones(static_cast<std::uint32_t>(warm_.size()));
  function->set_busy_clones(busy_);
}

}  // namespace ember::emberd::functions
