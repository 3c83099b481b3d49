#pragma once

#include <cstdint>

#include "virtio/rate_limiter.h"

namespace ember::virtio::testing {

// A Clock that moves only when the test says so.
class FakeClock final : public Clock {
 public:
  std::uint64_t NowNs() const override { return now_ns_; }
  void AdvanceMs(std::uint64_t ms) { now_ns_ += ms * 1'000'000; }
  void AdvanceNs(std::uint64_t ns) { now_ns_ += ns; }

 private:
  std::uint64_t now_ns_ = 1'000'000'000;
};

}  // namespace ember::virtio::testing
