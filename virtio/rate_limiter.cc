#include "virtio/rate_limiter.h"

#include <cstring>

#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <limits>

#include "virtio/rate_limiter_state.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"

namespace ember::virtio {
namespace {

// Token arithmetic multiplies nanoseconds by bucket sizes, which overflows 64 bits for large
// buckets; __extension__ keeps -Wpedantic quiet about the GCC/Clang 128-bit type. With a valid
// config (size <= 2^40, refill time <= 3.6e12 ns < 2^42) and tokens or debt below 2^65, every
// product below stays under 2^107.
__extension__ using Wide = unsigned __int128;

constexpr std::uint64_t kMaxU64 = std::numeric_limits<std::uint64_t>::max();

constexpr std::uint64_t kNsPerMs = 1'000'000;
constexpr std::uint64_t kNsPerSec = 1'000'000'000;

class SystemClock final : public Clock {
 public:
  std::uint64_t NowNs() const override {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * kNsPerSec +
           static_cast<std::uint64_t>(ts.tv_nsec);
  }
};

// a + b, stopping at 2^64 - 1: a guest that keeps over-consuming owes "forever", not a
// wrapped-around small debt.
std::uint64_t SaturatingAdd(std::uint64_t a, std::uint64_t b) {
  return b > kMaxU64 - a ? kMaxU64 : a + b;
}

// The bucket's refill period in ns; aborts on a config no caller should have let through,
// since the arithmetic below is only safe within ValidateTokenBucket's bounds.
std::uint64_t RefillNs(const TokenBucketConfig& config) {
  if (absl::Status status = ValidateTokenBucket(config, "token_bucket");
      !status.ok() || !config.enabled()) {
    EMBER_LOG(kError) << "invalid token bucket reached the rate limiter: " << status.message();
    std::abort();
  }
  return config.refill_time_ms * kNsPerMs;
}

}  // namespace

const Clock& Clock::System() {
  static const SystemClock clock;
  return clock;
}

TokenBucket::TokenBucket(const TokenBucketConfig& config, std::uint64_t now_ns)
    : config_(config),
      refill_ns_(RefillNs(config)),
      budget_(config.size),
      one_time_burst_(config.one_time_burst),
      last_refill_ns_(now_ns) {}

void TokenBucket::RestoreLevel(std::uint64_t budget, std::uint64_t one_time_burst,
                               std::uint64_t debt, std::uint64_t now_ns) {
  budget_ = std::min(budget, config_.size);
  one_time_burst_ = std::min(one_time_burst, config_.one_time_burst);
  debt_ = debt;
  last_refill_ns_ = now_ns;
}

void TokenBucket::Refill(std::uint64_t now_ns) {
  if (now_ns <= last_refill_ns_) return;
  const Wide elapsed = now_ns - last_refill_ns_;
  const Wide earned = elapsed * config_.size / refill_ns_;
  if (earned == 0) return;  // keep last_refill_ns_ so that partial tokens accumulate
  // Advance by the time the whole tokens took, carrying the remainder to the next refill.
  last_refill_ns_ += static_cast<std::uint64_t>(earned * refill_ns_ / config_.size);
  // The debt is paid first; the rest fills the bucket, and what does not fit is lost.
  const auto paid = static_cast<std::uint64_t>(std::min<Wide>(earned, debt_));
  debt_ -= paid;
  const auto tokens = static_cast<std::uint64_t>(std::min<Wide>(earned - paid, config_.size));
  budget_ = std::min(config_.size, budget_ + tokens);
  if (budget_ == config_.size) last_refill_ns_ = now_ns;  // a full bucket banks nothing
}

TokenBucket::Reduction TokenBucket::Reduce(std::uint64_t tokens, std::uint64_t now_ns) {
  std::uint64_t from_burst = 0;
  if (one_time_burst_ > 0) {
    from_burst = std::min(one_time_burst_, tokens);
    one_time_burst_ -= from_burst;
    tokens -= from_burst;
    if (tokens == 0) return Reduction::kSuccess;
  }
  Refill(now_ns);
  if (debt_ == 0 && tokens <= budget_) {
    budget_ -= tokens;
    return Reduction::kSuccess;
  }
  if (tokens > config_.size) {
    // Can never fit: let it through, empty the bucket and owe the rest, so the average rate
    // still holds (the limiter blocks until the debt is repaid).
    debt_ = SaturatingAdd(debt_, tokens - budget_);
    budget_ = 0;
    return Reduction::kOverConsumption;
  }
  one_time_burst_ += from_burst;
  return Reduction::kFailure;
}

void TokenBucket::Replenish(std::uint64_t tokens) {
  budget_ = std::min(config_.size, budget_ + std::min(tokens, config_.size));
}

std::uint64_t TokenBucket::NsToRefill(std::uint64_t tokens) const {
  const std::uint64_t wanted = std::min(tokens, config_.size);
  const Wide needed = Wide{debt_} + (wanted > budget_ ? wanted - budget_ : 0);
  // Rounded up: waking early would only fail again. A debt of centuries saturates.
  return static_cast<std::uint64_t>(
      std::min<Wide>((needed * refill_ns_ + config_.size - 1) / config_.size, kMaxU64));
}

absl::StatusOr<RateLimiter> RateLimiter::Create(const RateLimiterConfig& config,
                                                const Clock& clock) {
  EMBER_RETURN_IF_ERROR(ValidateRateLimiterConfig(config, "rate_limiter"));
  base::UniqueFd timer(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer) return base::ErrnoError("timerfd_create", "rate limiter");
  RateLimiter limiter(std::move(timer), clock);
  limiter.Update(config.bandwidth, config.ops);
  return limiter;
}

bool RateLimiter::Consume(std::uint64_t tokens, TokenType type) {
  if (blocked_) return false;
  std::optional<TokenBucket>& bucket = Bucket(type);
  if (!bucket) return true;
  switch (bucket->Reduce(tokens, clock_->NowNs())) {
    case TokenBucket::Reduction::kSuccess:
      return true;
    case TokenBucket::Reduction::kFailure:
      Block(bucket->NsToRefill(tokens));
      return false;
    case TokenBucket::Reduction::kOverConsumption:
      Block(bucket->NsToRefill(0));
      return true;
  }
  return false;
}

bool RateLimiter::ConsumeLimitedRequest(std::uint64_t bytes) {
  if (!Consume(1, TokenType::kOps)) return false;
  if (!Consume(bytes, TokenType::kBytes)) {
    ManualReplenish(1, TokenType::kOps);
    return false;
  }
  return true;
}

void RateLimiter::ManualReplenish(std::uint64_t tokens, TokenType type) {
  if (std::optional<TokenBucket>& bucket = Bucket(type)) bucket->Replenish(tokens);
}

void RateLimiter::Block(std::uint64_t ns) {
  ns = std::max<std::uint64_t>(ns, 1);  // a zero it_value would disarm the timer
  itimerspec spec{};
  spec.it_value.tv_sec = static_cast<time_t>(ns / kNsPerSec);
  spec.it_value.tv_nsec = static_cast<long>(ns % kNsPerSec);
  // Cannot fail with a valid timerfd and a normalised timespec.
  ::timerfd_settime(timer_.Get(), 0, &spec, nullptr);
  blocked_ = true;
}

void RateLimiter::OnTimer() {
  std::uint64_t expirations = 0;
  [[maybe_unused]] ssize_t ignored = ::read(timer_.Get(), &expirations, sizeof(expirations));
  blocked_ = false;
}

void RateLimiter::Update(const std::optional<TokenBucketConfig>& bandwidth,
                         const std::optional<TokenBucketConfig>& ops) {
  const std::uint64_t now = clock_->NowNs();
  auto apply = [now](std::optional<TokenBucket>& bucket,
                     const std::optional<TokenBucketConfig>& config) {
    if (!config) return;
    bucket.reset();
    if (config->enabled()) bucket.emplace(*config, now);
  };
  apply(bandwidth_, bandwidth);
  apply(ops_, ops);
}

namespace {

std::optional<TokenBucketState> SaveBucket(const std::optional<TokenBucket>& bucket) {
  if (!bucket) return std::nullopt;
  return TokenBucketState{bucket->config().size, bucket->budget(), bucket->one_time_burst(),
                          bucket->debt()};
}

void RestoreBucket(const std::optional<TokenBucketState>& saved,
                   std::optional<TokenBucket>& bucket, std::uint64_t now_ns) {
  if (!saved || !bucket) return;
  if (saved->size != bucket->config().size) return;  // other limits now: start full
  bucket->RestoreLevel(saved->budget, saved->one_time_burst, saved->debt, now_ns);
}

}  // namespace

RateLimiterState RateLimiter::SaveState() const {
  return {SaveBucket(bandwidth_), SaveBucket(ops_)};
}

void RateLimiter::RestoreState(const RateLimiterState& saved) {
  const std::uint64_t now = clock_->NowNs();
  RestoreBucket(saved.bandwidth, bandwidth_, now);
  RestoreBucket(saved.ops, ops_, now);
}

}  // namespace ember::virtio
