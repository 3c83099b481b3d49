#include "tests/integration/hostile_attacks.h"

#include <chrono>
#include <utility>

#include "rootfs/testguest/hostile.h"
#include "tests/support/files.h"

namespace ember::testing {
namespace {

using std::chrono::seconds;

// attack.c's attacks and what the spec has the device do about each.
constexpr std::pair<const char*, const char*> kExpected[] = {
    {"desc-loop", OUTCOME_NEEDS_RESET},
    {"desc-self", OUTCOME_NEEDS_RESET},
    {"chain-too-long", OUTCOME_NEEDS_RESET},
    {"len-past-memory", OUTCOME_NEEDS_RESET},
    {"buffer-in-mmio-gap", OUTCOME_NEEDS_RESET},
    {"avail-idx-jump", OUTCOME_NEEDS_RESET},
    {"avail-head-beyond", OUTCOME_NEEDS_RESET},
    {"used-idx-scribble", OUTCOME_IGNORED},
    {"queue-changed-after-driver-ok", OUTCOME_IGNORED},
    {"unoffered-feature", OUTCOME_REFUSED},
    {"config-write", OUTCOME_IGNORED},
    {"notify-storm", OUTCOME_SURVIVED},
    {"oversized", OUTCOME_DROPPED},
};
constexpr std::int64_t kNeedsResetAttacks = 7;
// queue-changed-after-driver-ok writes five queue registers of a live queue; notify-storm
// notifies a queue that does not exist ATTACK_NOTIFY_STORM / 100 times.
constexpr std::int64_t kInvalidRegisterWrites = 5 + ATTACK_NOTIFY_STORM / 100;

}  // namespace

std::int64_t MetricValue(const std::string& json, const std::string& group,
                         const std::string& name) {
  // ToJson's flat shape: {"utc_timestamp_ms":N,"group":{"name":N,...},...}.
  const std::size_t at = json.find("\"" + group + "\":{");
  if (at == std::string::npos) return -1;
  const std::size_t end = json.find('}', at);
  const std::string key = "\"" + name + "\":";
  const std::size_t found = json.find(key, at);
  if (found == std::string::npos || found > end) return -1;
  return std::stoll(json.substr(found + key.size()));
}

std::string FetchMetrics(ControlledVmm& vmm) {
  v1::ControlRequest request;
  request.mutable_get_metrics();
  const v1::ControlResponse response = vmm.Call(request, seconds(30));
  return response.code() == 0 ? response.metrics_json() : "";
}

void ExpectAttacksHandled(ControlledVmm& vmm, const AttackedDevice& device) {
  const std::string console = vmm.Console();
  EXPECT_NE(console.find("\nPASS " + device.kind + "-attacks\n"), std::string::npos) << console;
  for (const auto& [attack, outcome] : kExpected) {
    const std::string line = "attack " + device.kind + " " + attack + ": " + outcome + "\n";
    EXPECT_NE(console.find(line), std::string::npos) << "no \"" << line << "\" in\n" << console;
  }

  const std::string json = FetchMetrics(vmm);
  ASSERT_FALSE(json.empty()) << "the VMM did not answer GetMetrics after the attacks";
  const std::string mmio = "mmio_" + device.group;
  EXPECT_EQ(MetricValue(json, mmio, "needs_reset"), kNeedsResetAttacks) << json;
  EXPECT_EQ(MetricValue(json, device.group, "invalid_chains"), kNeedsResetAttacks) << json;
  EXPECT_EQ(MetricValue(json, mmio, "features_refused"), 1) << json;
  EXPECT_EQ(MetricValue(json, mmio, "config_writes_refused"), 1) << json;
  EXPECT_GE(MetricValue(json, mmio, "invalid_register_access"), kInvalidRegisterWrites) << json;
  EXPECT_GE(MetricValue(json, device.group, device.oversized_metric), 1) << json;

  v1::ControlRequest describe;
  describe.mutable_describe();
  EXPECT_EQ(vmm.Call(describe, seconds(30)).code(), 0) << "the VMM stopped answering";
}

}  // namespace ember::testing
