#include "virtio/mmio/state_proto.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ember::virtio {
namespace {

// Through the wire, as a state file carries it.
VirtioDeviceSnapshot RoundTrip(const VirtioDeviceSnapshot& state) {
  v1::VirtioDeviceState parsed;
  EXPECT_TRUE(parsed.ParseFromString(ToProto(state).SerializeAsString()));
  return FromProto(parsed);
}

VirtioDeviceSnapshot Transport(std::string name, DeviceState device) {
  VirtioDeviceSnapshot state;
  state.device_id = 2;
  state.name = std::move(name);
  state.status = 0xf;
  state.driver_features = 1ull << 32;
  state.device_features_sel = 1;
  state.driver_features_sel = 1;
  state.queue_sel = 1;
  state.interrupt_status = 1;
  state.config_generation = 3;
  state.queues = {{256, true, 0x1000, 0x2000, 0x3000, 7, 5}, {128, false, 0, 0, 0, 0, 0}};
  state.device = std::move(device);
  return state;
}

void ExpectSameTransport(const VirtioDeviceSnapshot& a, const VirtioDeviceSnapshot& b) {
  EXPECT_EQ(a.device_id, b.device_id);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.status, b.status);
  EXPECT_EQ(a.driver_features, b.driver_features);
  EXPECT_EQ(a.device_features_sel, b.device_features_sel);
  EXPECT_EQ(a.driver_features_sel, b.driver_features_sel);
  EXPECT_EQ(a.queue_sel, b.queue_sel);
  EXPECT_EQ(a.interrupt_status, b.interrupt_status);
  EXPECT_EQ(a.config_generation, b.config_generation);
  ASSERT_EQ(a.queues.size(), b.queues.size());
  for (std::size_t i = 0; i < a.queues.size(); ++i) {
    EXPECT_EQ(a.queues[i].size, b.queues[i].size);
    EXPECT_EQ(a.queues[i].ready, b.queues[i].ready);
    EXPECT_EQ(a.queues[i].desc_addr, b.queues[i].desc_addr);
    EXPECT_EQ(a.queues[i].driver_addr, b.queues[i].driver_addr);
    EXPECT_EQ(a.queues[i].device_addr, b.queues[i].device_addr);
    EXPECT_EQ(a.queues[i].next_avail, b.queues[i].next_avail);
    EXPECT_EQ(a.queues[i].next_used, b.queues[i].next_used);
  }
}

TEST(DeviceStateProto, TransportRegistersAndQueuesSurviveTheWire) {
  const VirtioDeviceSnapshot saved = Transport("block_rootfs", block::BlockState{});
  ExpectSameTransport(RoundTrip(saved), saved);
}

TEST(DeviceStateProto, BlockStateKeepsItsBucketsAndTheirAbsence) {
  const block::BlockState block{{TokenBucketState{1000, 250, 40, 7}, std::nullopt}};

  const VirtioDeviceSnapshot restored = RoundTrip(Transport("block_rootfs", block));

  EXPECT_EQ(restored.device, DeviceState(block));
}

TEST(DeviceStateProto, NetStateKeepsEachDirectionsLimiter) {
  const net::NetState net{{std::nullopt, TokenBucketState{10, 3, 0, 0}},
                          {TokenBucketState{5000, 1, 2, 3}, std::nullopt}};

  const VirtioDeviceSnapshot restored = RoundTrip(Transport("net_eth0", net));

  EXPECT_EQ(restored.device, DeviceState(net));
}

TEST(DeviceStateProto, VsockAndStatelessDevicesKeepTheirKind) {
  EXPECT_EQ(RoundTrip(Transport("vsock_v", vsock::VsockState{})).device,
            DeviceState(vsock::VsockState{}));
  EXPECT_EQ(RoundTrip(Transport("other", std::monostate{})).device, DeviceState());
}

google::protobuf::RepeatedPtrField<v1::VirtioDeviceState> Saved(
    const std::vector<std::string>& ids) {
  google::protobuf::RepeatedPtrField<v1::VirtioDeviceState> saved;
  for (const std::string& id : ids) saved.Add()->set_id(id);
  return saved;
}

TEST(MatchDeviceStates, MatchesByIdWhateverTheSavedOrder) {
  auto match = MatchDeviceStates({"block_rootfs", "net_eth0", "vsock_v"},
                                 Saved({"vsock_v", "block_rootfs", "net_eth0"}));
  ASSERT_TRUE(match.ok()) << match.status();
  EXPECT_EQ(*match, (std::vector<int>{1, 2, 0}));
}

TEST(MatchDeviceStates, ADeviceOfAnotherIdIsRefusedNamingBothSets) {
  auto match = MatchDeviceStates({"block_rootfs", "net_eth0"}, Saved({"block_rootfs", "net_eth1"}));
  ASSERT_TRUE(absl::IsInvalidArgument(match.status())) << match.status();
  EXPECT_NE(match.status().message().find("(block_rootfs, net_eth1)"), std::string::npos);
  EXPECT_NE(match.status().message().find("(block_rootfs, net_eth0)"), std::string::npos);
}

TEST(MatchDeviceStates, AMissingOrAnExtraDeviceIsRefused) {
  EXPECT_TRUE(absl::IsInvalidArgument(
      MatchDeviceStates({"block_rootfs", "net_eth0"}, Saved({"block_rootfs"})).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      MatchDeviceStates({"block_rootfs"}, Saved({"block_rootfs", "net_eth0"})).status()));
}

TEST(MatchDeviceStates, AnIdSavedTwiceIsRefused) {
  auto match = MatchDeviceStates({"block_rootfs", "net_eth0"},
                                 Saved({"block_rootfs", "block_rootfs"}));
  EXPECT_TRUE(absl::IsInvalidArgument(match.status())) << match.status();
}

}  // namespace
}  // namespace ember::virtio
