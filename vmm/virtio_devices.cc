#include "vmm/virtio_devices.h"

#include <sys/epoll.h>

#include "absl/strings/str_format.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/base/status.h"

namespace ember::vmm {

absl::Status VirtioDevices::Add(std::string id, std::unique_ptr<virtio::MmioTransport> transport,
                                Bus& mmio_bus, kvm::Vm& vm, base::EventLoop& loop) {
  if (transports_.size() >= kMaxDevices) {
    return absl::InvalidArgumentError("at most " + std::to_string(kMaxDevices) +
                                      " virtio devices fit on the interrupt controller");
  }
  std::size_t index = transports_.size();
  Placement at{arch::kVirtioMmioBase + index * arch::kVirtioMmioWindow,
               kFirstGsi + static_cast<std::uint32_t>(index)};
  virtio::MmioTransport* t = transport.get();
  EMBER_RETURN_IF_ERROR(mmio_bus.Insert(at.base, virtio::MmioTransport::kWindowSize, t));
  EMBER_RETURN_IF_ERROR(vm.RegisterIrqfd(t->irqfd().Get(), at.gsi));
  for (std::size_t q = 0; q < t->num_queues(); ++q) {
    EMBER_RETURN_IF_ERROR(vm.RegisterIoeventfd(t->queue_event(q).Get(),
                                               at.base + virtio::MmioTransport::kQueueNotifyOffset,
                                               sizeof(std::uint32_t), /*pio=*/false, q));
    // Edge-triggered and never read (MmioTransport::ProcessQueueNotification).
    EMBER_RETURN_IF_ERROR(loop.Add(t->queue_event(q).Get(), EPOLLIN | EPOLLET,
                                   [t, q](std::uint32_t) { t->ProcessQueueNotification(q); }));
  }
  for (virtio::EventSource& source : t->device().EventSources()) {
    EMBER_RETURN_IF_ERROR(loop.Add(
        source.fd, EPOLLIN | (source.edge_triggered ? EPOLLET : 0u),
        [on_readable = std::move(source.on_readable)](std::uint32_t) { on_readable(); }));
  }
  transports_.push_back(std::move(transport));
  ids_.push_back(std::move(id));
  placements_.push_back(at);
  return absl::OkStatus();
}

std::string VirtioDevices::CmdlineTokens() const {
  std::string tokens;
  for (const Placement& at : placements_) {
    if (!tokens.empty()) tokens += ' ';
    tokens += absl::StrFormat("virtio_mmio.device=4K@0x%x:%u", at.base, at.gsi);
  }
  return tokens;
}

}  // namespace ember::vmm
