#include "vmm/startup_profile.h"

#include <string>

#include "vmm/base/clock.h"
#include "vmm/base/metrics.h"

namespace ember::vmm {
namespace {

// The end of the last phase recorded; 0 before Begin() (marks are then dropped: a VMM built
// in-process by a test has no start-up to profile).
std::uint64_t g_last_mark_us = 0;

void Record(const char* phase, std::uint64_t us) {
  base::MetricsRegistry::Global().Get("startup", std::string(phase) + "_us")->Set(us);
}

}  // namespace

void StartupProfile::Begin(std::uint64_t start_us, std::uint64_t caller_start_us) {
  if (caller_start_us != 0 && caller_start_us <= start_us) {
    Record("exec", start_us - caller_start_us);
  }
  g_last_mark_us = start_us;
}

void StartupProfile::Mark(const char* phase) {
  if (g_last_mark_us == 0) return;
  const std::uint64_t now = base::MonotonicMicros();
  Record(phase, now - g_last_mark_us);
  g_last_mark_us = now;
}

}  // namespace ember::vmm
