#pragma once

#include <time.h>

#include <cstdint>

namespace ember::base {

// CLOCK_MONOTONIC in microseconds: comparable across processes on one host, which is what
// `--start-time-us` (the caller's clock reading at exec) relies on.
inline std::uint64_t MonotonicMicros() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000u +
         static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
}

}  // namespace ember::base
