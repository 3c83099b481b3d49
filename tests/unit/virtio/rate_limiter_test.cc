#include "virtio/rate_limiter.h"

#include <gtest/gtest.h>
#include <sys/timerfd.h>

#include <limits>

#include "virtio/rate_limiter_state.h"
#include "virtio/testing/fake_clock.h"

namespace ember::virtio {
namespace {

using testing::FakeClock;
using TokenType = RateLimiter::TokenType;

constexpr std::uint64_t kNsPerMs = 1'000'000;

RateLimiter MakeLimiter(const RateLimiterConfig& config, const FakeClock& clock) {
  auto limiter = RateLimiter::Create(config, clock);
  EXPECT_TRUE(limiter.ok()) << limiter.status();
  return std::move(limiter).value();
}

// Nanoseconds until the limiter's timer fires; 0 when disarmed.
std::uint64_t TimerRemainingNs(const RateLimiter& limiter) {
  itimerspec spec{};
  EXPECT_EQ(::timerfd_gettime(limiter.timer_fd(), &spec), 0);
  return static_cast<std::uint64_t>(spec.it_value.tv_sec) * 1'000'000'000 +
         static_cast<std::uint64_t>(spec.it_value.tv_nsec);
}

TEST(RateLimiter, WithoutBucketsEverythingPasses) {
  FakeClock clock;
  RateLimiter limiter = MakeLimiter({}, clock);
  EXPECT_TRUE(limiter.Consume(1ull << 40, TokenType::kBytes));
  EXPECT_TRUE(limiter.Consume(1ull << 40, TokenType::kOps));
  EXPECT_FALSE(limiter.blocked());
}

TEST(RateLimiter, BucketGrantsItsSizeThenRefuses) {
  FakeClock clock;
  RateLimiter limiter = MakeLimiter({{1000, 0, 100}, {}}, clock);
  EXPECT_TRUE(limiter.Consume(600, TokenType::kBytes));
  EXPECT_TRUE(limiter.Consume(400, TokenType::kBytes));
  EXPECT_FALSE(limiter.Consume(1, TokenType::kBytes));
  EXPECT_TRUE(limiter.blocked());
}

TEST(RateLimiter, RefusalArmsTimerForTheMissingTokens) {
  FakeClock clock;
  RateLimiter limiter = MakeLimiter({{1000, 0, 1000}, {}}, clock);
  ASSERT_TRUE(limiter.Consume(1000, TokenType::kBytes));

  ASSERT_FALSE(limiter.Consume(250, TokenType::kBytes));

  // 250 of 1000 tokens refill in a quarter of the 1000 ms refill time.
  const std::uint64_t remaining = TimerRemainingNs(limiter);
  EXPECT_LE(remaining, 250 * kNsPerMs);
  EXPECT_GT(remaining, 200 * kNsPerMs);
}

TEST(RateLimiter, TokensRefillLinearlyWithTime) {
  FakeClock clock;
  RateLimiter limiter = MakeLimiter({{1000, 0, 100}, {}}, clock);
  ASSERT_TRUE(limiter.Consume(1000, TokenType::kBytes));
  clock.AdvanceMs(50);
  EXPECT_TRUE(limiter.Consume(500, TokenType::kBytes));
  EXPECT_FALSE(limiter.Consume(1, TokenType::kBytes));
}

TEST(RateLimiter, StaysBlockedUntilTheTimerFiresEvenWithTokens) {
  FakeClock clock;
  RateLimiter limiter = MakeLimiter({{}, {1, 0, 100}}, clock);
  ASSERT_TRUE(limiter.Consume(1, TokenType::kOps));
  ASSERT_FALSE(limiter.Consume(1, TokenType::kOps));
  clock.AdvanceMs(100);
  EXPECT_FALSE(limiter.Consume(1, TokenType::kOps));

  limiter.OnTimer();

  EXPECT_FALSE(limiter.blocked());
  EXPECT_TRUE(limiter.Consume(1, TokenType::kOps));
}

TEST(RateLimiter, TimerFdBecomesReadableWhenTheWaitIsOver) {
  FakeClock clock;
  RateLimiter limiter = MakeLimiter({{}, {1000, 0, 1}}, clock);
  ASSERT_TRUE(limiter.Consume(1000, TokenType::kOps));
  ASSERT_FALSE(limiter.Consume(1, TokenType::kOps));  // waits ~1 µs of real time
  ::usleep(1000);
  std::uint64_t expirations = 0;
  EXPECT_EQ(::read(limiter.timer_fd(), &expirations, sizeof(expirations)),
            static_cast<ssize_t>(sizeof(expirations)));
  EXPECT_EQ(expirations, 1u);
}

TEST(RateLimiter, OneTimeBurstIsSpentFirstAndNeverRefilled) {
  FakeClock clock;
  RateLimiter limiter = MakeLimiter({{100, 1000, 100}, {}}, clock);
  EXPECT_TRUE(limiter.Consume(1000, TokenType::kBytes));
  EXPECT_EQ(limiter.bandwidth()->one_time_burst(), 0u);
  EXPECT_EQ(limiter.bandwidth()->budget(), 100u);
  EXPECT_TRUE(limiter.Consume(100, TokenType::kBytes));
  clock.AdvanceMs(1000);
  EXPECT_TRUE(limiter.Consume(100, TokenType::kBytes));
  EXPECT_FALSE(limiter.Consume(1, TokenType::kBytes));
}

TEST(RateLimiter, RefusedRequestKeepsTheBurstItWouldHaveUsed) {
  FakeClock clock;
  RateLimiter limiter = MakeLimiter({{100, 50, 100}, {}}, clock);
  ASSERT_TRUE(limiter.Consume(100, TokenType::kBytes));  // burst 50 + 50 of the budget
  ASSERT_FALSE(limiter.Consume(80, TokenType::kBytes));  // 50 budget is not enough
  EXPECT_EQ(limiter.bandwidth()->one_time_burst(), 0u);
  EXPECT_EQ(limiter.bandwidth()->budget(), 50u);
}

TEST(RateLimiter, RequestLargerThanTheBucketPassesAndThenBlocksForTheExcess) {
  FakeClock clock;
  RateLimiter limiter = MakeLimiter({{1000, 0, 1000}, {}}, clock);

  EXPECT_TRUE(limiter.Consume(3000, TokenType::kBytes));

  EXPECT_TRUE(limiter.blocked());
  const std::uint64_t remaining = TimerRemainingNs(limiter);
  EXPECT_LE(remaining, 2000 * kNsPerMs);
  EXPECT_GT(remaining, 1900 * kNsPerMs);
  // After one refill period the debt is only half repaid.
  limiter.OnTimer();
  clock.AdvanceMs(1000);
  EXPECT_FALSE(limiter.Consume(1, TokenType::kBytes));
  limiter.OnTimer();
  clock.AdvanceMs(1001);
  EXPECT_TRUE(limiter.Consume(1, TokenType::kBytes));
}

TEST(RateLimiter, RequestTakesOneOperationAndItsBytes) {
  FakeClock clock;
  RateLimiter limiter = MakeLimiter({{100, 0, 100}, {10, 0, 100}}, clock);
  ASSERT_TRUE(limiter.ConsumeRequest(60));
  EXPECT_EQ(limiter.ops()->budget(), 9u);
  EXPECT_EQ(limiter.bandwidth()->budget(), 40u);

  EXPECT_FALSE(limiter.ConsumeRequest(60));

  EXPECT_EQ(limiter.ops()->budget(), 9u);
  EXPECT_EQ(limiter.bandwidth()->budget(), 40u);
}

TEST(RateLimiter, UpdateReplacesABucketWithAFullOne) {
  FakeClock clock;
  RateLimiter limiter = MakeLimiter({{100, 0, 100}, {}}, clock);
  ASSERT_TRUE(limiter.Consume(100, TokenType::kBytes));

  limiter.Update(TokenBucketConfig{500, 0, 100}, std::nullopt);

  EXPECT_EQ(limiter.bandwidth()->budget(), 500u);
  EXPECT_FALSE(limiter.ops().has_value());
}

TEST(RateLimiter, UpdateWithDisabledConfigRemovesTheBucket) {
  FakeClock clock;
  RateLimiter limiter = MakeLimiter({{100, 0, 100}, {1, 0, 100}}, clock);
  limiter.Update(TokenBucketConfig{}, std::nullopt);
  EXPECT_FALSE(limiter.bandwidth().has_value());
  EXPECT_TRUE(limiter.ops().has_value());
  EXPECT_TRUE(limiter.Consume(1ull << 30, TokenType::kBytes));
}

TEST(TokenBucket, PartialTokensAccumulateAcrossSmallSteps) {
  // One token per 3 ms, asked for every 1 ms: the fractions must add up, not be dropped.
  TokenBucket bucket({10, 0, 30}, 0);
  ASSERT_EQ(bucket.Reduce(10, 0), TokenBucket::Reduction::kSuccess);
  int granted = 0;
  for (std::uint64_t ms = 1; ms <= 9; ++ms) {
    if (bucket.Reduce(1, ms * kNsPerMs) == TokenBucket::Reduction::kSuccess) ++granted;
  }
  EXPECT_EQ(granted, 3);
}

TEST(RateLimiter, LargestValidBucketDoesNotOverflow) {
  FakeClock clock;
  const std::uint64_t size = kMaxBucketTokens;
  RateLimiter limiter = MakeLimiter({{size, 0, kMaxRefillTimeMs}, {}}, clock);
  ASSERT_TRUE(limiter.Consume(size, TokenType::kBytes));
  clock.AdvanceMs(kMaxRefillTimeMs / 2);
  EXPECT_TRUE(limiter.Consume(size / 2, TokenType::kBytes));
  EXPECT_FALSE(limiter.Consume(size / 1000, TokenType::kBytes));
}

TEST(RateLimiter, CreateRefusesABucketOutsideTheValidRange) {
  // The refill time that used to make the refill period exactly 0 ns (2^58 ms * 10^6 wraps).
  FakeClock clock;
  auto limiter = RateLimiter::Create({{1, 0, 288230376151711744}, {}}, clock);
  ASSERT_FALSE(limiter.ok());
  EXPECT_EQ(limiter.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(limiter.status().message().find("rate_limiter.bandwidth.refill_time"),
            std::string::npos)
      << limiter.status();
}

TEST(RateLimiterDeathTest, UpdateWithAnUnvalidatedBucketAborts) {
  FakeClock clock;
  RateLimiter limiter = MakeLimiter({}, clock);
  EXPECT_DEATH(limiter.Update(std::nullopt, TokenBucketConfig{1, 0, 0}), "refill_time");
}

TEST(TokenBucket, WaitForAHugeDebtOnTheSlowestBucketSaturates) {
  // 2^40 tokens owed at one token per hour is ~4e24 ns: more than 64 bits hold.
  TokenBucket bucket({1, 0, kMaxRefillTimeMs}, 0);
  ASSERT_EQ(bucket.Reduce(kMaxBucketTokens, 0), TokenBucket::Reduction::kOverConsumption);
  EXPECT_EQ(bucket.NsToRefill(0), std::numeric_limits<std::uint64_t>::max());
}

TEST(TokenBucket, DebtSaturatesInsteadOfWrapping) {
  const std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
  TokenBucket bucket({1, 0, 1}, 0);
  ASSERT_EQ(bucket.Reduce(max, 0), TokenBucket::Reduction::kOverConsumption);
  ASSERT_EQ(bucket.Reduce(max, 0), TokenBucket::Reduction::kOverConsumption);
  EXPECT_EQ(bucket.debt(), max);
}

TEST(TokenBucket, HugeReplenishFillsTheBucketWithoutWrapping) {
  TokenBucket bucket({100, 0, 1}, 0);
  ASSERT_EQ(bucket.Reduce(60, 0), TokenBucket::Reduction::kSuccess);
  bucket.Replenish(std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(bucket.budget(), 100u);
}

TEST(ValidateTokenBucket, SizeZeroDisablesTheBucketWhateverTheOtherFields) {
  EXPECT_TRUE(ValidateTokenBucket({0, ~0ull, ~0ull}, "b").ok());
  EXPECT_TRUE(ValidateTokenBucket({}, "b").ok());
}

TEST(ValidateTokenBucket, LargestAndSmallestLimitsAreValid) {
  EXPECT_TRUE(
      ValidateTokenBucket({kMaxBucketTokens, kMaxBucketTokens, kMaxRefillTimeMs}, "b").ok());
  EXPECT_TRUE(ValidateTokenBucket({1, 0, 1}, "b").ok());
}

TEST(ValidateTokenBucket, SizeWithoutRefillTimeIsNamed) {
  EXPECT_EQ(ValidateTokenBucket({1, 0, 0}, "drives[0].rate_limiter.ops").message(),
            "drives[0].rate_limiter.ops.refill_time: must be 1 to 3600000 ms when size is set, "
            "got 0");
}

TEST(ValidateTokenBucket, RefillTimeAboveAnHourIsNamed) {
  EXPECT_EQ(ValidateTokenBucket({1, 0, kMaxRefillTimeMs + 1}, "b").message(),
            "b.refill_time: must be 1 to 3600000 ms when size is set, got 3600001");
  EXPECT_EQ(ValidateTokenBucket({1, 0, 288230376151711744}, "b").code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ValidateTokenBucket, SizeAbove2To40IsNamed) {
  EXPECT_EQ(ValidateTokenBucket({kMaxBucketTokens + 1, 0, 100}, "b").message(),
            "b.size: must be at most 1099511627776 (2^40), got 1099511627777");
}

TEST(ValidateTokenBucket, OneTimeBurstAbove2To40IsNamed) {
  EXPECT_EQ(ValidateTokenBucket({1, kMaxBucketTokens + 1, 100}, "b").message(),
            "b.one_time_burst: must be at most 1099511627776 (2^40), got 1099511627777");
}

TEST(ValidateRateLimiterConfig, NamesTheBucketAtFault) {
  const absl::Status status = ValidateRateLimiterConfig({{1, 0, 100}, {1, 0, 0}}, "rx");
  EXPECT_EQ(status.message().substr(0, 19), "rx.ops.refill_time:") << status;
  EXPECT_TRUE(ValidateRateLimiterConfig({{1, 0, 100}, {}}, "rx").ok());
}

TEST(RateLimiter, SavedLevelsRestoreIntoANewLimiter) {
  FakeClock clock;
  RateLimiter original = MakeLimiter({{1000, 200, 100}, {10, 0, 100}}, clock);
  ASSERT_TRUE(original.Consume(1100, TokenType::kBytes));  // the burst, then most of the budget
  ASSERT_TRUE(original.Consume(7, TokenType::kOps));
  RateLimiterState saved = original.SaveState();

  RateLimiter restored = MakeLimiter({{1000, 200, 100}, {10, 0, 100}}, clock);
  restored.RestoreState(saved);
  EXPECT_EQ(restored.bandwidth()->budget(), 100u);
  EXPECT_EQ(restored.bandwidth()->one_time_burst(), 0u);
  EXPECT_EQ(restored.ops()->budget(), 3u);
  EXPECT_FALSE(restored.Consume(101, TokenType::kBytes));  // no fresh burst after a restore
}

TEST(RateLimiter, LevelsOfOtherLimitsAreIgnored) {
  FakeClock clock;
  RateLimiter original = MakeLimiter({{1000, 0, 100}, {}}, clock);
  ASSERT_TRUE(original.Consume(900, TokenType::kBytes));
  RateLimiter clone = MakeLimiter({{5000, 0, 100}, {}}, clock);  // a clone with other limits
  clone.RestoreState(original.SaveState());
  EXPECT_EQ(clone.bandwidth()->budget(), 5000u);
}

TEST(RateLimiter, AStateSavedWithoutBucketsLeavesTheLevelsAlone) {
  FakeClock clock;
  RateLimiter limiter = MakeLimiter({{1000, 0, 100}, {}}, clock);
  ASSERT_TRUE(limiter.Consume(900, TokenType::kBytes));

  limiter.RestoreState(RateLimiterState{});

  EXPECT_EQ(limiter.bandwidth()->budget(), 100u);  // untouched, not emptied or refilled
}

}  // namespace
}  // namespace ember::virtio
