#include "vmm/emberd/self_metrics.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace ember::emberd {

namespace {

// The number after `field` in /proc/self/status: KiB for "VmRSS:", a count for "Threads:".
std::uint64_t ReadProcStatusNumber(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) {
      return std::strtoull(line.c_str() + std::strlen(field), nullptr, 10);
    }
  }
  return 0;
}

std::size_t CountFds() {
  std::size_t n = 0;
  std::error_code error;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    ++n;
  }
  return n;
}

}  // namespace

std::string SelfMetricsJson(std::int64_t unix_ms, std::size_t vms, std::size_t live_vms,
                            std::size_t watchers) {
  return "{\"utc_timestamp_ms\": " + std::to_string(unix_ms) +
         ", \"emberd\": {\"vms\": " + std::to_string(vms) +
         ", \"live_vms\": " + std::to_string(live_vms) +
         ", \"watchers\": " + std::to_string(watchers) +
         ", \"rss_kib\": " + std::to_string(ReadProcStatusNumber("VmRSS:")) +
         ", \"fds\": " + std::to_string(CountFds()) +
         ", \"threads\": " + std::to_string(ReadProcStatusNumber("Threads:")) + "}}";
}

}  // namespace ember::emberd
