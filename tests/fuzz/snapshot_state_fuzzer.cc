// libFuzzer target: a snapshot state file's decoding and what a restore does with it next.
// The input is the payload (the serialized ember.v1.SnapshotState) framed as a real state
// file, CRC-64 included, so that the fuzzer gets past the checksum to the decoder; an input
// whose first byte is odd is taken as the whole file instead, framing and all. A decoded
// state is checked against its own configuration, as ember-vmm's restore does, and each
// virtio device state (up to four) is restored into a device of its type behind the real
// transport, whose queues are then notified and served: a crafted file must be refused or
// give a device that stays inside guest memory.

#include <cstdint>
#include <memory>
#include <string>

#include "snapshot/file_codec.h"
#include "snapshot/state_file.h"
#include "tests/fuzz/fuzz_host.h"
#include "tests/fuzz/hostile_driver.h"
#include "virtio/block/block_device.h"
#include "virtio/mmio/state_proto.h"
#include "virtio/net/net_device.h"
#include "virtio/spec.h"
#include "virtio/testing/fake_net.h"
#include "virtio/vsock/vsock_device.h"
#include "vmm/restore.h"

namespace {

using namespace ember;

std::string Frame(const std::string& payload) {
  std::string file(snapshot::kMagic, sizeof(snapshot::kMagic));
  snapshot::PutLittleEndian<std::uint32_t>(file, snapshot::kFormatVersion);
  snapshot::PutLittleEndian<std::uint32_t>(file, 0);
  snapshot::PutLittleEndian<std::uint64_t>(file, payload.size());
  file += payload;
  snapshot::PutLittleEndian<std::uint64_t>(file, snapshot::Crc64(file, file.size()));
  return file;
}

// A device of the saved state's type, restored from it and then driven.
void Restore(const v1::VirtioDeviceState& saved) {
  virtio::testing::FakeTapPeer peer;
  fuzz::HostileDriver driver;
  absl::StatusOr<std::unique_ptr<virtio::VirtioDevice>> device;
  switch (saved.device_type()) {
    case virtio::kDeviceIdBlock: {
      virtio::block::BlockConfig config;
      config.drive_id = "fuzz";
      config.path = fuzz::FuzzDiskPath();
      config.engine = virtio::block::EngineKind::kSync;
      device = virtio::block::BlockDevice::Create(config, driver.metrics());
      break;
    }
    case virtio::kDeviceIdNet: {
      virtio::net::NetConfig config;
      config.iface_id = "fuzz";
      config.host_dev_name = "faketap";
      device = virtio::net::NetDevice::CreateWithTap(config, peer.MakeTap(), driver.metrics());
      break;
    }
    case virtio::kDeviceIdVsock: {
      virtio::vsock::VsockConfig config;
      config.vsock_id = "fuzz";
      config.guest_cid = 3;
      config.uds_path = fuzz::FuzzVsockHost().uds_path;
      device = virtio::vsock::VsockDevice::Create(config, driver.metrics());
      break;
    }
    default:
      return;
  }
  if (!device.ok()) std::abort();  // the host's resources are fine: a failure is ours
  if (!driver.Attach(std::move(device).value(), /*probe=*/false)) return;
  if (!driver.transport().RestoreState(virtio::FromProto(saved)).ok()) return;
  for (std::size_t i = 0; i < driver.transport().num_queues(); ++i) {
    driver.transport().HandleQueueEvent(i);
  }
  driver.ServeEvents();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto state = snapshot::DecodeState((data[0] & 1) != 0 ? rest : Frame(rest));
  if (!state.ok()) return 0;
  (void)vmm::CheckStateMatchesConfig(*state, state->config());
  for (int i = 0; i < std::min(state->virtio_size(), 4); ++i) Restore(state->virtio(i));
  return 0;
}
