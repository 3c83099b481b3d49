// libFuzzer target: the virtio-mmio transport's registers written in any order. Unlike the
// device fuzzers, the driver starts from a device no driver has touched (as at boot, or
// after a reset): status, features, queue selection, sizes, addresses, QueueReady, config
// space and notifications come in whatever order and width the input says, so the
// transport's state machine meets every sequence a guest can make, before and after
// DRIVER_OK, for a block, net or vsock device (the input's first byte).

#include <cstdint>

#include "tests/fuzz/fuzz_host.h"
#include "tests/fuzz/hostile_driver.h"
#include "virtio/block/block_device.h"
#include "virtio/net/net_device.h"
#include "virtio/testing/fake_net.h"
#include "virtio/vsock/vsock_device.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ember;
  FuzzedDataProvider input(data, size);
  virtio::testing::FakeTapPeer peer;
  fuzz::HostileDriver driver;
  absl::StatusOr<std::unique_ptr<virtio::VirtioDevice>> device;
  switch (input.ConsumeIntegralInRange(0, 2)) {
    case 0: {
      virtio::block::BlockConfig config;
      config.drive_id = "fuzz";
      config.path = fuzz::FuzzDiskPath();
      config.engine = virtio::block::EngineKind::kSync;
      config.queue_size = fuzz::HostileDriver::kQueueSize;
      device = virtio::block::BlockDevice::Create(config, driver.metrics());
      break;
    }
    case 1: {
      virtio::net::NetConfig config;
      config.iface_id = "fuzz";
      config.host_dev_name = "faketap";
      config.queue_size = fuzz::HostileDriver::kQueueSize;
      device = virtio::net::NetDevice::CreateWithTap(config, peer.MakeTap(), driver.metrics());
      break;
    }
    default: {
      virtio::vsock::VsockConfig config;
      config.vsock_id = "fuzz";
      config.guest_cid = 3;
      config.uds_path = fuzz::FuzzVsockHost().uds_path;
      config.queue_size = fuzz::HostileDriver::kQueueSize;
      device = virtio::vsock::VsockDevice::Create(config, driver.metrics());
    }
  }
  if (!device.ok()) std::abort();  // the host's resources are fine: a failure is ours
  if (!driver.Attach(std::move(device).value(), /*probe=*/false)) return 0;
  driver.Run(input);
  return 0;
}
