// libFuzzer target: virtio-net's TX frames and RX buffers under a hostile driver (tests/fuzz/
// hostile_driver.h), on a stand-in tap whose host end sends frames of any size (past the MTU
// included) whenever the input says.

#include <cstdint>
#include <vector>

#include "tests/fuzz/hostile_driver.h"
#include "virtio/net/net_device.h"
#include "virtio/testing/fake_net.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ember;
  FuzzedDataProvider input(data, size);
  virtio::testing::FakeTapPeer peer;
  fuzz::HostileDriver driver;
  virtio::net::NetConfig config;
  config.iface_id = "fuzz";
  config.host_dev_name = "faketap";
  if (input.ConsumeBool()) config.guest_mac = virtio::net::MacAddress{0x06, 0, 0xac, 0x10, 0, 2};
  config.queue_size = fuzz::HostileDriver::kQueueSize;
  auto device = virtio::net::NetDevice::CreateWithTap(config, peer.MakeTap(), driver.metrics());
  if (!device.ok()) std::abort();
  if (!driver.Attach(std::move(device).value())) return 0;
  driver.Run(input, [&peer](FuzzedDataProvider& in) {
    // A frame from the host: mostly small, sometimes past any MTU the guest allows.
    const std::size_t len = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::size_t>(0, 128)
                                             : in.ConsumeIntegralInRange<std::size_t>(0, 70000);
    std::vector<std::uint8_t> frame = in.ConsumeBytes<std::uint8_t>(len);
    frame.resize(len);
    (void)peer.Send(frame);
  });
  // The host end reads what the guest sent, as the tap's reader would.
  while (peer.Receive().has_value()) {
  }
  return 0;
}
