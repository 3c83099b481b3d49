#include "virtio/mmio/state_proto.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "virtio/block/state_proto.h"
#include "virtio/net/state_proto.h"
#include "virtio/vsock/state_proto.h"

namespace ember::virtio {
namespace {

// The device's own state into the message's oneof: one line per device kind.
void PutDeviceState(const DeviceState& state, v1::VirtioDeviceState& out) {
  if (auto* s = std::get_if<block::BlockState>(&state)) *out.mutable_block() = block::ToProto(*s);
  if (auto* s = std::get_if<net::NetState>(&state)) *out.mutable_net() = net::ToProto(*s);
  if (auto* s = std::get_if<vsock::VsockState>(&state)) *out.mutable_vsock() = vsock::ToProto(*s);
}

DeviceState GetDeviceState(const v1::VirtioDeviceState& in) {
  switch (in.device_case()) {
    case v1::VirtioDeviceState::kBlock: return block::FromProto(in.block());
    case v1::VirtioDeviceState::kNet: return net::FromProto(in.net());
    case v1::VirtioDeviceState::kVsock: return vsock::FromProto(in.vsock());
    case v1::VirtioDeviceState::DEVICE_NOT_SET: break;
  }
  return std::monostate{};
}

}  // namespace

v1::VirtioDeviceState ToProto(const VirtioDeviceSnapshot& state) {
  v1::VirtioDeviceState message;
  message.set_id(state.name);
  message.set_device_type(state.device_id);
  v1::MmioTransportState& transport = *message.mutable_transport();
  transport.set_status(state.status);
  transport.set_driver_features(state.driver_features);
  transport.set_device_features_sel(state.device_features_sel);
  transport.set_driver_features_sel(state.driver_features_sel);
  transport.set_queue_sel(state.queue_sel);
  transport.set_interrupt_status(state.interrupt_status);
  transport.set_config_generation(state.config_generation);
  for (const VirtqueueSnapshot& q : state.queues) {
    v1::VirtqueueState& queue = *transport.add_queues();
    queue.set_size(q.size);
    queue.set_ready(q.ready);
    queue.set_desc_addr(q.desc_addr);
    queue.set_driver_addr(q.driver_addr);
    queue.set_device_addr(q.device_addr);
    queue.set_next_avail(q.next_avail);
    queue.set_next_used(q.next_used);
  }
  PutDeviceState(state.device, message);
  return message;
}

VirtioDeviceSnapshot FromProto(const v1::VirtioDeviceState& message) {
  const v1::MmioTransportState& transport = message.transport();
  VirtioDeviceSnapshot state;
  state.device_id = message.device_type();
  state.name = message.id();
  state.status = transport.status();
  state.driver_features = transport.driver_features();
  state.device_features_sel = transport.device_features_sel();
  state.driver_features_sel = transport.driver_features_sel();
  state.queue_sel = transport.queue_sel();
  state.interrupt_status = transport.interrupt_status();
  state.config_generation = transport.config_generation();
  for (const v1::VirtqueueState& q : transport.queues()) {
    state.queues.push_back({q.size(), q.ready(), q.desc_addr(), q.driver_addr(), q.device_addr(),
                            q.next_avail(), q.next_used()});
  }
  state.device = GetDeviceState(message);
  return state;
}

absl::StatusOr<std::vector<int>> MatchDeviceStates(
    const std::vector<std::string>& configured_ids,
    const google::protobuf::RepeatedPtrField<v1::VirtioDeviceState>& saved) {
  std::map<std::string, int> saved_index;
  std::vector<std::string> saved_ids;
  for (int i = 0; i < saved.size(); ++i) {
    if (!saved_index.emplace(saved[i].id(), i).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("the snapshot holds device \"", saved[i].id(), "\" twice"));
    }
    saved_ids.push_back(saved[i].id());
  }
  std::vector<int> match;
  for (const std::string& id : configured_ids) {
    auto found = saved_index.find(id);
    if (found == saved_index.end()) break;
    match.push_back(found->second);
  }
  if (match.size() != configured_ids.size() || configured_ids.size() != saved_ids.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the snapshot's devices (", absl::StrJoin(saved_ids, ", "),
        ") are not the configured ones (", absl::StrJoin(configured_ids, ", "), ")"));
  }
  return match;
}

}  // namespace ember::virtio
