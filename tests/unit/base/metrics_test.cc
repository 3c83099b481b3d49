#include "vmm/base/metrics.h"

#include <gtest/gtest.h>

namespace ember::base {
namespace {

TEST(Metrics, JsonGroupsValuesByGroup) {
  MetricsRegistry registry;
  registry.Get("vcpu", "exit_io")->Add(3);
  registry.Get("vcpu", "exit_mmio")->Add();
  registry.Get("serial", "tx_bytes")->Set(42);
  std::string json = registry.ToJson();
  EXPECT_NE(json.find("\"serial\":{\"tx_bytes\":42}"), std::string::npos) << json;
  EXPECT_NE(json.find("\"vcpu\":{\"exit_io\":3,\"exit_mmio\":1}"), std::string::npos) << json;
  EXPECT_EQ(json.rfind("{\"utc_timestamp_ms\":", 0), 0u) << json;
}

TEST(Metrics, SameNameReturnsSameMetric) {
  MetricsRegistry registry;
  EXPECT_EQ(registry.Get("a", "b"), registry.Get("a", "b"));
}

}  // namespace
}  // namespace ember::base
