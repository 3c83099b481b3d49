#pragma once

// What the attack tests (hostile_attack_test.cc, hostile_net_test.cc) check once a guest ran
// `<device>-attacks` (rootfs/testguest/attack.h): each attack's outcome as the guest saw it,
// the VMM's metrics that count them, and that the VMM still answers its controller.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "tests/integration/hostile_vmm.h"

namespace ember::testing {

// Where a device's counts are: its transport's group ("mmio_block_rootfs"), its own group
// ("block_rootfs"), and its own counter of the requests `oversized` sends.
struct AttackedDevice {
  std::string kind;  // as the guest prints it: "blk", "net", "vsock"
  std::string group;
  std::string oversized_metric;
};

// `name` of metrics group `group` in ember-vmm's metrics JSON, or -1 when absent.
std::int64_t MetricValue(const std::string& json, const std::string& group,
                         const std::string& name);

// The metrics JSON of a running VMM (control GetMetrics); empty when it did not answer.
std::string FetchMetrics(ControlledVmm& vmm);

// Checks (EXPECT) that the guest of `vmm`, which has idled after `<kind>-attacks`, passed it
// with each attack met as the spec says, that the metrics count every one, and that the VMM
// answers Describe.
void ExpectAttacksHandled(ControlledVmm& vmm, const AttackedDevice& device);

}  // namespace ember::testing
