#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/base/unique_fd.h"

namespace ember::virtio {

// virtio/rate_limiter_state.h; declared only, so that the rules library and emberd, which
// take this header alone for the token-bucket rule, need nothing more of virtio.
struct RateLimiterState;

// Monotonic nanoseconds; injectable so rate-limiter tests control time.
class Clock {
 public:
  virtual ~Clock() = default;
  [[nodiscard]] virtual std::uint64_t NowNs() const = 0;
  // CLOCK_MONOTONIC; lives for the whole process.
  static const Clock& System();
};

// One token bucket, with Firecracker's semantics: `size` tokens refill linearly over
// `refill_time_ms`; `one_time_burst` extra tokens are available once, at start, and are not
// refilled. A size of 0 means "no limit". Valid values: ValidateTokenBucket.
struct TokenBucketConfig {
  std::uint64_t size = 0;
  std::uint64_t one_time_burst = 0;
  std::uint64_t refill_time_ms = 0;

  [[nodiscard]] bool enabled() const { return size != 0; }
};

struct RateLimiterConfig {
  TokenBucketConfig bandwidth;  // bytes
  TokenBucketConfig ops;        // operations
};

// The valid range of a bucket, one rule wherever limits come from (ember-vmm's config,
// emberd's API, runtime updates over the control channel). Size 0 disables the bucket and
// the other fields are then ignored; otherwise size and one_time_burst are at most
// kMaxBucketTokens and refill_time_ms is 1 to kMaxRefillTimeMs. Within these bounds the token
// arithmetic cannot overflow (rate_limiter.cc), and they are far beyond any real limit: 1 TiB
// per millisecond at one end, one token per hour at the other.
inline constexpr std::uint64_t kMaxBucketTokens = std::uint64_t{1} << 40;
inline constexpr std::uint64_t kMaxRefillTimeMs = 3'600'000;  // one hour

// OK, or INVALID_ARGUMENT naming `field` and the member by its config name, e.g.
// "drives[0].rate_limiter.bandwidth.refill_time: ...". Any thread. Inline so that emberd,
// which links nothing of the VMM, checks API requests by the same rule.
[[nodiscard]] inline absl::Status ValidateTokenBucket(const TokenBucketConfig& bucket,
                                                      const std::string& field) {
  if (bucket.size == 0) return absl::OkStatus();
  const std::string max_tokens = std::to_string(kMaxBucketTokens);
  if (bucket.size > kMaxBucketTokens) {
    return absl::InvalidArgumentError(field + ".size: must be at most " + max_tokens +
                                      " (2^40), got " + std::to_string(bucket.size));
  }
  if (bucket.one_time_burst > kMaxBucketTokens) {
    return absl::InvalidArgumentError(field + ".one_time_burst: must be at most " + max_tokens +
                                      " (2^40), got " + std::to_string(bucket.one_time_burst));
  }
  if (bucket.refill_time_ms == 0 || bucket.refill_time_ms > kMaxRefillTimeMs) {
    return absl::InvalidArgumentError(
        field + ".refill_time: must be 1 to " + std::to_string(kMaxRefillTimeMs) +
        " ms when size is set, got " + std::to_string(bucket.refill_time_ms));
  }
  return absl::OkStatus();
}

// Both buckets, named `field`.bandwidth and `field`.ops. Any thread.
[[nodiscard]] inline absl::Status ValidateRateLimiterConfig(const RateLimiterConfig& config,
                                                            const std::string& field) {
  if (absl::Status status = ValidateTokenBucket(config.bandwidth, field + ".bandwidth");
      !status.ok()) {
    return status;
  }
  return ValidateTokenBucket(config.ops, field + ".ops");
}

class TokenBucket {
 public:
  enum class Reduction {
    kSuccess,          // the tokens were taken
    kFailure,          // not enough tokens yet; nothing was taken
    kOverConsumption,  // more than the bucket holds: it was emptied and the excess is owed
  };

  // A full bucket as of `now_ns`. `config` must be enabled() and valid (ValidateTokenBucket);
  // anything else is a caller's bug and aborts.
  TokenBucket(const TokenBucketConfig& config, std::uint64_t now_ns);

  [[nodiscard]] Reduction Reduce(std::uint64_t tokens, std::uint64_t now_ns);
  // Gives back tokens taken by a Reduce whose work did not happen (never above size).
  void Replenish(std::uint64_t tokens);
  // Nanoseconds until the bucket has refilled `tokens` (at most its size) beyond its budget.
  [[nodiscard]] std::uint64_t NsToRefill(std::uint64_t tokens) const;

  [[nodiscard]] std::uint64_t budget() const { return budget_; }
  [[nodiscard]] std::uint64_t one_time_burst() const { return one_time_burst_; }
  [[nodiscard]] std::uint64_t debt() const { return debt_; }
  // Snapshots: puts back a saved level (clamped to the configuration), refilling from
  // `now_ns` on — the time the VM spent saved does not earn tokens.
  void RestoreLevel(std::uint64_t budget, std::uint64_t one_time_burst, std::uint64_t debt,
                    std::uint64_t now_ns);
  [[nodiscard]] const TokenBucketConfig& config() const { return config_; }

 private:
  void Refill(std::uint64_t now_ns);

  TokenBucketConfig config_;
  std::uint64_t refill_ns_;
  std::uint64_t budget_;
  std::uint64_t one_time_burst_;
  std::uint64_t last_refill_ns_;
  // Tokens owed after an over-consumption, paid from the next refills.
  std::uint64_t debt_ = 0;
};

// A bandwidth bucket and an operations bucket in front of one device. When the device asks
// for more than the buckets hold, Consume says no and arms timer_fd() for the moment enough
// tokens will have refilled; the device stops taking requests and, when the VMM loop sees
// timer_fd() readable, calls OnTimer() and resumes. No polling.
// Owned by its device; used only on the VMM loop thread (Update included: the control path
// posts updates to that thread).
class RateLimiter {
 public:
  enum class TokenType { kBytes, kOps };

  // INVALID_ARGUMENT ("rate_limiter.bandwidth.refill_time: ...") for a config
  // ValidateRateLimiterConfig refuses.
  [[nodiscard]] static absl::StatusOr<RateLimiter> Create(
      const RateLimiterConfig& config, const Clock& clock = Clock::System());

  // Takes `tokens` from one bucket. False (and the timer armed) when the device must wait.
  [[nodiscard]] bool Consume(std::uint64_t tokens, TokenType type);
  // One operation of `bytes` bytes: both buckets, or neither.
  [[nodiscard]] bool ConsumeRequest(std::uint64_t bytes) {
    // An unlimited drive or NIC (the common case) pays one inline check per request.
    if (!blocked_ && !ops_ && !bandwidth_) return true;
    return ConsumeLimitedRequest(bytes);
  }
  void ManualReplenish(std::uint64_t tokens, TokenType type);

  // True while the timer is armed: everything is refused until OnTimer().
  [[nodiscard]] bool blocked() const { return blocked_; }
  // Readable when a throttled device should retry. Owned by the limiter.
  [[nodiscard]] int timer_fd() const { return timer_.Get(); }
  // Call when timer_fd() is readable: clears the timer and the block.
  void OnTimer();

  // Replaces the buckets given (nullopt keeps a bucket, a disabled config removes it). A
  // replaced bucket starts full, as in Firecracker. The caller has validated the configs
  // (ValidateTokenBucket); an invalid one aborts.
  void Update(const std::optional<TokenBucketConfig>& bandwidth,
              const std::optional<TokenBucketConfig>& ops);

  [[nodiscard]] const std::optional<TokenBucket>& bandwidth() const { return bandwidth_; }
  [[nodiscard]] const std::optional<TokenBucket>& ops() const { return ops_; }

  // Snapshots: the buckets' levels, and back. Restoring into a limiter whose buckets differ
  // from the saved ones (a clone given other limits, or none) keeps them full.
  [[nodiscard]] RateLimiterState SaveState() const;
  void RestoreState(const RateLimiterState& saved);

 private:
  RateLimiter(base::UniqueFd timer, const Clock& clock) : timer_(std::move(timer)), clock_(&clock) {}
  [[nodiscard]] bool ConsumeLimitedRequest(std::uint64_t bytes);
  [[nodiscard]] std::optional<TokenBucket>& Bucket(TokenType type) {
    return type == TokenType::kBytes ? bandwidth_ : ops_;
  }
  void Block(std::uint64_t ns);

  base::UniqueFd timer_;
  const Clock* clock_;
  std::optional<TokenBucket> bandwidth_;
  std::optional<TokenBucket> ops_;
  bool blocked_ = false;
};

}  // namespace ember::virtio
