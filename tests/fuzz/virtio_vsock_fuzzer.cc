// libFuzzer target: virtio-vsock's packets and credit updates under a hostile driver (tests/
// fuzz/hostile_driver.h): TX packets of any header (ops, ports, lengths, credit fields) and RX
// buffers of any shape, while host processes connect through the Unix-socket backend, write,
// accept the guest's connections and close, whenever the input says.

#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_host.h"
#include "tests/fuzz/hostile_driver.h"
#include "virtio/vsock/vsock_device.h"
#include "vmm/base/unique_fd.h"
#include "vmm/base/unix_address.h"

namespace {

using ember::base::UniqueFd;

sockaddr_un Address(const std::string& path) { return ember::base::UnixAddress(path).value(); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ember;
  FuzzedDataProvider input(data, size);
  const fuzz::VsockHost& sockets = fuzz::FuzzVsockHost();
  std::vector<UniqueFd> host;  // host ends of this input's connections, either direction
  fuzz::HostileDriver driver;
  virtio::vsock::VsockConfig config;
  config.vsock_id = "fuzz";
  config.guest_cid = 3;
  config.uds_path = sockets.uds_path;
  config.queue_size = fuzz::HostileDriver::kQueueSize;
  auto device = virtio::vsock::VsockDevice::Create(config, driver.metrics());
  if (!device.ok()) std::abort();
  if (!driver.Attach(std::move(device).value())) return 0;
  driver.Run(input, [&](FuzzedDataProvider& in) {
    switch (in.ConsumeIntegralInRange(0, 3)) {
      case 0: {  // a host process connects and asks for a guest port
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        const sockaddr_un addr = Address(sockets.uds_path);
        // sockaddr_un is what connect takes for a Unix socket.
        if (::connect(fd.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
          break;
        }
        const std::string line =
            in.ConsumeBool()
                ? "CONNECT " + std::to_string(in.ConsumeIntegral<std::uint32_t>()) + "\n"
                : in.ConsumeRandomLengthString(32);
        (void)!::write(fd.Get(), line.data(), line.size());
        host.push_back(std::move(fd));
        break;
      }
      case 1: {  // the host service accepts a guest's connection
        UniqueFd fd(
            ::accept4(sockets.service.Get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (fd.Get() >= 0) host.push_back(std::move(fd));
        break;
      }
      case 2: {  // a host end writes
        if (host.empty()) break;
        const UniqueFd& fd = host[in.ConsumeIntegralInRange<std::size_t>(0, host.size() - 1)];
        std::vector<std::uint8_t> bytes(in.ConsumeIntegralInRange<std::size_t>(0, 300000),
                                        in.ConsumeIntegral<std::uint8_t>());
        (void)!::write(fd.Get(), bytes.data(), bytes.size());
        break;
      }
      default: {  // a host end reads what it has, or closes
        if (host.empty()) break;
        const std::size_t i = in.ConsumeIntegralInRange<std::size_t>(0, host.size() - 1);
        if (in.ConsumeBool()) {
          host.erase(host.begin() + static_cast<std::ptrdiff_t>(i));
        } else {
          std::vector<std::uint8_t> bytes(65536);
          (void)!::read(host[i].Get(), bytes.data(), bytes.size());
        }
      }
    }
  });
  // The guest's connections the service never accepted: gone with the input.
  while (true) {
    UniqueFd fd(::accept4(sockets.service.Get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (fd.Get() < 0) break;
  }
  return 0;
}
