#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"

namespace ember::base {

// One named value. Add/Set/Get are lock-free and may be called from any thread.
class Metric {
 public:
  void Add(std::uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  void Set(std::uint64_t n) { value_.store(n, std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t Get() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

// Named metrics grouped as "group.name", dumped as JSON in Firecracker's shape:
// {"utc_timestamp_ms": T, "group": {"name": value, ...}, ...}.
class MetricsRegistry {
 public:
  // The process-wide registry that ember-vmm's components report into.
  static MetricsRegistry& Global();

  // Returns the metric, creating it at zero. The pointer stays valid for the registry's life.
  Metric* Get(const std::string& group, const std::string& name);
  [[nodiscard]] std::string ToJson() const;
  // Writes ToJson() plus a newline to `path` atomically (temp file + rename).
  [[nodiscard]] absl::Status WriteTo(const std::string& path) const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::map<std::string, std::unique_ptr<Metric>>> groups_;  // guarded by mu_
};

}  // namespace ember::base
