// libFuzzer target: virtio-blk's request path under a hostile driver (tests/fuzz/
// hostile_driver.h): request headers, data and status buffers of any shape, in any order,
// on either engine, against a small disk file, with resets and register writes in between.

#include <cstdint>

#include "tests/fuzz/fuzz_host.h"
#include "tests/fuzz/hostile_driver.h"
#include "virtio/block/block_device.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ember;
  FuzzedDataProvider input(data, size);
  fuzz::HostileDriver driver;
  virtio::block::BlockConfig config;
  config.drive_id = "fuzz";
  config.path = fuzz::FuzzDiskPath();
  const std::uint8_t choice = input.ConsumeIntegral<std::uint8_t>();
  config.engine =
      (choice & 1) != 0 ? virtio::block::EngineKind::kSync : virtio::block::EngineKind::kIoUring;
  config.read_only = (choice & 2) != 0;
  config.cache =
      (choice & 4) != 0 ? virtio::block::CacheMode::kWriteback : virtio::block::CacheMode::kUnsafe;
  config.queue_size = fuzz::HostileDriver::kQueueSize;
  auto device = virtio::block::BlockDevice::Create(config, driver.metrics());
  if (!device.ok()) std::abort();  // the disk is fine: a failure here is the host's
  if (!driver.Attach(std::move(device).value())) return 0;
  driver.Run(input);
  return 0;
}
