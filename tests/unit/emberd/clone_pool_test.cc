// ClonePool (vmm/emberd/functions/clone_pool.h): which clone serves an invocation, what happens
// to it afterwards and what the background work owes the pool, with plain Clone records (no
// VMs: the pool only moves them between its lists and its callers).
#include "vmm/emberd/functions/clone_pool.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace ember::emberd::functions {
namespace {

constexpr std::uint64_t kMs = 1000;  // µs

v1::FunctionPool Settings(std::uint32_t min_warm, std::uint32_t max_concurrency,
                          std::uint32_t keep_warm_ms = 0, std::uint32_t idle_to_zero_ms = 0) {
  v1::FunctionPool pool;
  pool.set_min_warm(min_warm);
  pool.set_max_concurrency(max_concurrency);
  pool.set_keep_warm_ms(keep_warm_ms);
  pool.set_idle_to_zero_ms(idle_to_zero_ms);
  return pool;
}

std::unique_ptr<Clone> MakeClone(const std::string& vm_id, bool activated) {
  auto clone = std::make_unique<Clone>();
  clone->vm_id = vm_id;
  clone->activated = activated;
  return clone;
}

// Fills the pool with one paused clone through the refill protocol.
void AddPaused(ClonePool& pool, const std::string& vm_id, std::uint64_t now) {
  ASSERT_TRUE(pool.BeginRefill(now));
  ASSERT_EQ(pool.EndRefill(MakeClone(vm_id, false)), nullptr);
}

TEST(ClonePool, BeyondMaxConcurrencyIsResourceExhaustedAndCounted) {
  ClonePool pool(Settings(0, 2), 0);
  ASSERT_TRUE(pool.Admit(1).ok());
  ASSERT_TRUE(pool.Admit(2).ok());
  absl::StatusOr<ClonePool::Admission> third = pool.Admit(3);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  v1::Function described;
  pool.Describe(&described);
  EXPECT_EQ(described.counters().rejected(), 1u);
  EXPECT_EQ(described.busy_clones(), 2u);
}

TEST(ClonePool, ZeroMaxConcurrencyMeansSixteen) {
  ClonePool pool(Settings(0, 0), 0);
  for (int i = 0; i < 16; ++i) ASSERT_TRUE(pool.Admit(1).ok()) << i;
  EXPECT_EQ(pool.Admit(1).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(ClonePool, FinishingGivesTheSlotBack) {
  ClonePool pool(Settings(0, 1), 0);
  absl::StatusOr<ClonePool::Admission> first = pool.Admit(1);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->clone, nullptr) << "an empty pool has nothing to give: a cold restore";
  EXPECT_FALSE(first->pool_hit);
  (void)pool.Finish(MakeClone("c1", true), absl::StatusCode::kOk, 2, 5);
  EXPECT_TRUE(pool.Admit(3).ok());
}

TEST(ClonePool, WarmCloneIsPreferredOverAPausedOne) {
  ClonePool pool(Settings(1, 4, /*keep_warm_ms=*/1000), 0);
  ASSERT_TRUE(pool.Admit(1).ok());
  EXPECT_EQ(pool.Finish(MakeClone("warm", true), absl::StatusCode::kOk, 2, 5), nullptr);
  AddPaused(pool, "paused", 2);
  absl::StatusOr<ClonePool::Admission> next = pool.Admit(3);
  ASSERT_TRUE(next.ok() && next->clone != nullptr);
  EXPECT_EQ(next->clone->vm_id, "warm");
  EXPECT_TRUE(next->pool_hit);
  absl::StatusOr<ClonePool::Admission> after = pool.Admit(4);
  ASSERT_TRUE(after.ok() && after->clone != nullptr);
  EXPECT_EQ(after->clone->vm_id, "paused");
}

TEST(ClonePool, ACloneServesOneInvocationAtATime) {
  ClonePool pool(Settings(1, 4), 0);
  AddPaused(pool, "only", 0);
  absl::StatusOr<ClonePool::Admission> first = pool.Admit(1);
  absl::StatusOr<ClonePool::Admission> second = pool.Admit(1);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_NE(first->clone, nullptr);
  EXPECT_EQ(second->clone, nullptr) << "the one clone is busy: the second restores its own";
}

TEST(ClonePool, FailedOrUnkeptClonesComeBackForDiscard) {
  ClonePool pool(Settings(0, 4, /*keep_warm_ms=*/1000), 0);
  ASSERT_TRUE(pool.Admit(1).ok());
  EXPECT_NE(pool.Finish(MakeClone("failed", true), absl::StatusCode::kDeadlineExceeded, 2, 5),
            nullptr);
  ClonePool no_keep(Settings(0, 4), 0);
  ASSERT_TRUE(no_keep.Admit(1).ok());
  EXPECT_NE(no_keep.Finish(MakeClone("done", true), absl::StatusCode::kOk, 2, 5), nullptr);
  v1::Function described;
  pool.Describe(&described);
  EXPECT_EQ(described.counters().timeouts(), 1u);
  EXPECT_EQ(described.counters().failures(), 1u);
  EXPECT_EQ(described.warm_clones(), 0u);
}

TEST(ClonePool, WarmClonesExpireAfterKeepWarm) {
  ClonePool pool(Settings(0, 4, /*keep_warm_ms=*/100), 0);
  ASSERT_TRUE(pool.Admit(0).ok());
  ASSERT_EQ(pool.Finish(MakeClone("warm", true), absl::StatusCode::kOk, 0, 5), nullptr);
  EXPECT_TRUE(pool.Expire(99 * kMs).empty());
  EXPECT_EQ(pool.Expire(100 * kMs).size(), 1u);
}

TEST(ClonePool, RefillStopsAtMinWarmCountingRefillsInProgress) {
  ClonePool pool(Settings(2, 4), 0);
  EXPECT_TRUE(pool.BeginRefill(0));
  EXPECT_TRUE(pool.BeginRefill(0));
  EXPECT_FALSE(pool.BeginRefill(0)) << "two refills already on the way";
  EXPECT_EQ(pool.EndRefill(nullptr), nullptr);  // one failed
  EXPECT_TRUE(pool.BeginRefill(0));
}

TEST(ClonePool, IdlePoolScalesToZeroAndRefillsAfterTheNextInvocation) {
  ClonePool pool(Settings(1, 4, 0, /*idle_to_zero_ms=*/50), 0);
  AddPaused(pool, "pooled", 0);
  EXPECT_EQ(pool.Expire(50 * kMs).size(), 1u);
  EXPECT_FALSE(pool.BeginRefill(60 * kMs)) << "scaled to zero";
  ASSERT_TRUE(pool.Admit(70 * kMs).ok());
  EXPECT_TRUE(pool.BeginRefill(71 * kMs));
}

TEST(ClonePool, DrainedPoolAdmitsNothingAndReturnsEveryClone) {
  ClonePool pool(Settings(1, 4, /*keep_warm_ms=*/1000), 0);
  AddPaused(pool, "paused", 0);
  ASSERT_TRUE(pool.Admit(1).ok());
  ASSERT_TRUE(pool.Admit(1).ok());  // took "paused"; one more in flight, restoring
  EXPECT_EQ(pool.Finish(MakeClone("warm", true), absl::StatusCode::kOk, 2, 5), nullptr);
  EXPECT_TRUE(pool.BeginRefill(3));
  std::vector<std::unique_ptr<Clone>> idle = pool.Drain();
  ASSERT_EQ(idle.size(), 1u);
  EXPECT_EQ(idle[0]->vm_id, "warm");
  EXPECT_TRUE(pool.Draining());
  EXPECT_EQ(pool.Admit(4).status().code(), absl::StatusCode::kNotFound);
  // What was in flight comes back for discard, not into the pool.
  EXPECT_NE(pool.Finish(MakeClone("late", true), absl::StatusCode::kOk, 5, 5), nullptr);
  EXPECT_NE(pool.EndRefill(MakeClone("refilled", false)), nullptr);
}

TEST(LatencyWindow, QuantilesOfWhatItHolds) {
  LatencyWindow window;
  EXPECT_EQ(window.Quantile(0.5), 0u);
  for (std::uint64_t us = 1; us <= 100; ++us) window.Add(us);
  EXPECT_EQ(window.Quantile(0.5), 51u);
  EXPECT_EQ(window.Quantile(0.99), 99u);
}

TEST(ClonePool, RefillsOfAllFunctionsStopAtTheHostsPooledCap) {
  PooledClones pooled(4);
  ClonePool first(Settings(4, 4), 0, &pooled);
  ClonePool second(Settings(4, 4), 0, &pooled);

  // Both refill in turn for as long as they are let.
  int refills = 0;
  for (bool more = true; more;) {
    more = false;
    for (ClonePool* pool : {&first, &second}) {
      if (!pool->BeginRefill(1)) continue;
      ASSERT_EQ(pool->EndRefill(MakeClone("c" + std::to_string(refills++), false)), nullptr);
      more = true;
    }
  }

  v1::Function a, b;
  first.Describe(&a);
  second.Describe(&b);
  EXPECT_EQ(a.paused_clones() + b.paused_clones(), 4u);
  EXPECT_EQ(pooled.Count(), 4u);
}

TEST(ClonePool, ARefillWaitsForAPlaceAPoolHitGivesBack) {
  PooledClones pooled(1);
  ClonePool first(Settings(1, 4), 0, &pooled);
  ClonePool second(Settings(1, 4), 0, &pooled);
  AddPaused(first, "a", 1);
  ASSERT_FALSE(second.BeginRefill(1));

  absl::StatusOr<ClonePool::Admission> hit = first.Admit(2);

  ASSERT_TRUE(hit.ok() && hit->pool_hit);
  EXPECT_TRUE(second.BeginRefill(3));
}

TEST(ClonePool, AClonePastTheHostsPooledCapIsNotKeptWarm) {
  PooledClones pooled(1);
  ClonePool first(Settings(1, 4), 0, &pooled);
  ClonePool second(Settings(0, 4, /*keep_warm_ms=*/60'000), 0, &pooled);
  AddPaused(first, "a", 1);
  absl::StatusOr<ClonePool::Admission> admitted = second.Admit(2);
  ASSERT_TRUE(admitted.ok());

  std::unique_ptr<Clone> back = second.Finish(MakeClone("b", true), absl::StatusCode::kOk, 3, 1);

  ASSERT_NE(back, nullptr);  // the caller discards it
  EXPECT_EQ(pooled.Count(), 1u);
}

TEST(ClonePool, ClonesLeavingThePoolGiveTheirPlacesBack) {
  PooledClones pooled(8);
  {
    ClonePool other(Settings(1, 4), 0, &pooled);
    ClonePool pool(Settings(2, 4, /*keep_warm_ms=*/10, /*idle_to_zero_ms=*/0), 0, &pooled);
    AddPaused(pool, "a", 1);
    AddPaused(pool, "b", 1);
    absl::StatusOr<ClonePool::Admission> admitted = pool.Admit(2);
    ASSERT_TRUE(admitted.ok());
    ASSERT_EQ(pool.Finish(MakeClone("c", true), absl::StatusCode::kOk, 3, 1), nullptr);
    EXPECT_EQ(pooled.Count(), 2u);  // one paused, one warm
    EXPECT_EQ(pool.Expire(3 + 10 * kMs).size(), 1u);
    EXPECT_EQ(pooled.Count(), 1u);
    ASSERT_TRUE(pool.BeginRefill(4));  // a refill on its way while the function is deleted
    EXPECT_EQ(pool.Drain().size(), 1u);
    EXPECT_NE(pool.EndRefill(MakeClone("d", false)), nullptr);
    EXPECT_EQ(pooled.Count(), 0u);
    AddPaused(other, "e", 5);
  }
  EXPECT_EQ(pooled.Count(), 0u);  // the destroyed pool gave its paused clone's place back
}

}  // namespace
}  // namespace ember::emberd::functions
