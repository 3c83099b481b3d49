#include "vmm/base/metrics.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "vmm/base/atomic_file.h"

namespace ember::base {

MetricsRegistry& MetricsRegistry::Global() {
  static auto* registry = new MetricsRegistry();  // never destroyed: vCPU threads may outlive main
  return *registry;
}

Metric* MetricsRegistry::Get(const std::string& group, const std::string& name) {
  std::lock_guard lock(mu_);
  auto& slot = groups_[group][name];
  if (!slot) slot = std::make_unique<Metric>();
  return slot.get();
}

std::string MetricsRegistry::ToJson() const {
  auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  std::string out = absl::StrCat("{\"utc_timestamp_ms\":", now.count());
  std::lock_guard lock(mu_);
  // Names are chosen by our own code (identifiers), so they need no JSON escaping.
  for (const auto& [group, metrics] : groups_) {
    absl::StrAppend(&out, ",\"", group, "\":{");
    bool first = true;
    for (const auto& [name, metric] : metrics) {
      absl::StrAppend(&out, first ? "" : ",", "\"", name, "\":", metric->Get());
      first = false;
    }
    out += "}";
  }
  out += "}";
  return out;
}

absl::Status MetricsRegistry::WriteTo(const std::string& path) const {
  // Rewritten every minute from the VMM's event loop, which must not wait for the disk.
  return WriteFileAtomically(path, ToJson() + "\n", 0600, AtomicFile::Durability::kRenameOnly);
}

}  // namespace ember::base
