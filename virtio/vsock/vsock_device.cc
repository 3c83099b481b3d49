#include "virtio/vsock/vsock_device.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "virtio/spec.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"

namespace ember::virtio::vsock {
namespace {

// The most iovecs one readv takes.
constexpr std::size_t kMaxIov = IOV_MAX;

// Appends to `out` the iovecs of the `len` payload bytes after the header in `chain`'s
// writable stream, straight from its descriptors (DescriptorChain::WritableIoVecs would build
// them in a vector of their own, to be copied again). False when the stream is shorter.
bool AppendWritableIoVecs(const DescriptorChain& chain, std::uint64_t len, std::vector<iovec>* out) {
  std::uint64_t skip = kHeaderSize;
  for (const Descriptor& d : chain.writable()) {
    if (len == 0) break;
    if (skip >= d.len) {
      skip -= d.len;
      continue;
    }
    const std::uint64_t take = std::min<std::uint64_t>(d.len - skip, len);
    out->push_back({d.host.data() + skip, take});
    len -= take;
    skip = 0;
  }
  return len == 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<VsockDevice>> VsockDevice::Create(const VsockConfig& config,
                                                                 base::MetricsRegistry& metrics) {
  const std::string what = absl::StrCat("vsock ", config.vsock_id);
  if (config.guest_cid < kMinGuestCid || config.guest_cid > 0xfffffffeull) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": guest_cid ", config.guest_cid,
                                                   " is outside [3, 4294967294]"));
  }
  if (config.queue_size < 2 || config.queue_size > kMaxQueueSize ||
      (config.queue_size & (config.queue_size - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": queue size ", config.queue_size,
                                                   " is not a power of two in [2, 32768]"));
  }
  auto device = std::unique_ptr<VsockDevice>(new VsockDevice(config, metrics));
  auto muxer = Muxer::Create(config, device->metrics_);
  if (!muxer.ok()) return muxer.status();
  device->muxer_ = std::move(muxer).value();
  return device;
}

VsockDevice::VsockDevice(const VsockConfig& config, base::MetricsRegistry& metrics)
    : config_(config),
      queue_sizes_{config.queue_size, config.queue_size, config.queue_size},
      metrics_(metrics, "vsock_" + config.vsock_id) {}

VsockDevice::~VsockDevice() = default;

std::uint32_t VsockDevice::device_id() const { return kDeviceIdVsock; }

std::uint64_t VsockDevice::offered_features() const {
  return FeatureBit(kFeatureVersion1) | FeatureBit(kFeatureEventIdx) |
         FeatureBit(kFeatureIndirectDesc);
}

void VsockDevice::ReadConfig(std::uint64_t offset, std::span<std::uint8_t> data) const {
  // struct virtio_vsock_config: le64 guest_cid.
  std::uint8_t config[8];
  std::memcpy(config, &config_.guest_cid, sizeof(config));
  for (std::size_t i = 0; i < data.size(); ++i) {
    data[i] = offset + i < sizeof(config) ? config[offset + i] : 0;
  }
}

bool VsockDevice::WriteConfig(std::uint64_t, std::span<const std::uint8_t>) {
  // The guest CID is read-only.
  return false;
}

absl::Status VsockDevice::Activate(ActivationContext context) {
  if (context.queues.size() != 3 || !context.queues[kRxQueue] || !context.queues[kTxQueue] ||
      !context.queues[kEventQueue]) {
    return absl::FailedPreconditionError(
        name() + ": the driver did not enable the RX, TX and event queues");
  }
  std::lock_guard lock(mu_);
  rx_queue_ = std::move(context.queues[kRxQueue]);
  tx_queue_ = std::move(context.queues[kTxQueue]);
  event_queue_ = std::move(context.queues[kEventQueue]);
  signals_ = context.signals;
  broken_ = false;
  // Host connections that arrived before the driver was ready wait in the muxer.
  muxer_->Wake();
  return absl::OkStatus();
}

void VsockDevice::Reset() {
  std::lock_guard lock(mu_);
  // The guest's sockets went with its driver. Before the first activation (the reset that
  // starts every probe) there were none, and host connections waiting for the guest stay.
  if (rx_queue_) muxer_->CloseAll();
  rx_queue_.reset();
  tx_queue_.reset();
  event_queue_.reset();
  signals_ = nullptr;
  broken_ = false;
  pending_transport_reset_ = false;
}

std::vector<EventSource> VsockDevice::EventSources() {
  return {{muxer_->event_fd(), [this] { ProcessEvents(); }}};
}

std::size_t VsockDevice::connection_count() const {
  std::lock_guard lock(mu_);
  return muxer_->connection_count();
}

std::size_t VsockDevice::rx_wait_count() const {
  std::lock_guard lock(mu_);
  return muxer_->rx_wait_count();
}

void VsockDevice::ProcessQueue(std::size_t index) {
  std::lock_guard lock(mu_);
  if (index == kRxQueue) {
    metrics_.rx_queue_events->Add();
  } else if (index == kTxQueue) {
    metrics_.tx_queue_events->Add();
    ProcessTx();
  } else if (index == kEventQueue) {
    metrics_.event_queue_events->Add();
    ProcessEventQueue();
  }
  ProcessRx();
  InterruptIfNeeded();
}

void VsockDevice::ProcessEvents() {
  std::lock_guard lock(mu_);
  muxer_->ProcessEvents();
  ProcessEventQueue();
  ProcessRx();
  InterruptIfNeeded();
}

std::vector<std::optional<QueuePositions>> VsockDevice::SaveQueuePositions() const {
  std::lock_guard lock(mu_);
  if (!rx_queue_ || !tx_queue_ || !event_queue_) return {};
  return {QueuePositions{rx_queue_->next_avail(), rx_queue_->next_used()},
          QueuePositions{tx_queue_->next_avail(), tx_queue_->next_used()},
          QueuePositions{event_queue_->next_avail(), event_queue_->next_used()}};
}

DeviceState VsockDevice::SaveDeviceState() const { return VsockState{}; }

absl::Status VsockDevice::RestoreDeviceState(const DeviceState& state) {
  EMBER_RETURN_IF_ERROR(DeviceStateAs<VsockState>(state, name()).status());
  std::lock_guard lock(mu_);
  if (event_queue_) ResetAllConnectionsLocked();
  return absl::OkStatus();
}

void VsockDevice::ResetAllConnections() {
  std::lock_guard lock(mu_);
  ResetAllConnectionsLocked();
}

void VsockDevice::ResetAllConnectionsLocked() {
  muxer_->CloseAll();
  pending_transport_reset_ = true;
  metrics_.transport_resets->Add();
  ProcessEventQueue();
  InterruptIfNeeded();
}

// --- Guest to host (TX queue) --------------------------------------------------------------

void VsockDevice::ProcessTx() {
  if (!tx_queue_ || broken_) return;
  do {
    tx_queue_->DisableNotification();
    for (;;) {
      auto popped = tx_queue_->Pop();
      if (!popped.ok()) return MarkBroken(popped.status());
      if (!popped->has_value()) break;
      const DescriptorChain& chain = **popped;
      metrics_.tx_packets->Add();
      if (chain.writable_bytes != 0 || chain.readable_bytes < kHeaderSize) {
        metrics_.malformed_packets->Add();
        EMBER_LOG(kDebug) << name() << ": TX chain " << chain.head
                          << " is too short or device-writable";
      } else {
        std::array<std::uint8_t, kHeaderSize> raw{};
        if (chain.CopyFromReadable(0, raw)) muxer_->OnGuestPacket(Header::Decode(raw), chain);
      }
      tx_queue_->AddUsed(chain.head, 0);
    }
  } while (!broken_ && tx_queue_->EnableNotification());
}

// --- Host to guest (RX queue) ----------------------------------------------------------------

bool VsockDevice::PopRxChain(DescriptorChain* chain) {
  auto popped = rx_queue_->Pop(chain);
  if (!popped.ok()) {
    MarkBroken(popped.status());
    return false;
  }
  if (!*popped) return false;
  if (chain->readable_count != 0 || chain->writable_bytes < kHeaderSize) {
    MarkBroken(absl::InvalidArgumentError(absl::StrCat(
        "RX chain ", chain->head, " is device-readable or shorter than a packet header")));
    return false;
  }
  return true;
}

void VsockDevice::ProcessRx() {
  if (!Active()) return;
  // One chain object reused for every packet, and more behind it for batched reads.
  if (rx_chains_.empty()) rx_chains_.resize(1);
  while (muxer_->HasPendingRx()) {
    if (!PopRxChain(&rx_chains_[0])) {
      if (broken_) return;
      if (rx_queue_->EnableNotification()) continue;
      return;  // the guest's next RX buffer notifies the queue
    }
    if (!muxer_->FillRx(*this)) rx_queue_->UndoPop();
    if (broken_) return;
  }
}

void VsockDevice::SendControl(const Header& header) {
  PublishRx(rx_chains_[0], header, 0);
  metrics_.rx_packets->Add();
}

RxBuffers::Read VsockDevice::ReadStream(int fd, const Header& rw, std::uint64_t max_bytes,
                                        std::size_t max_buffers) {
  // Gather the payload areas of rx_chains_[0] (popped by ProcessRx) and of up to
  // max_buffers - 1 more chains, within max_bytes, for one readv. Linux's guest posts 4 KiB
  // buffers, so one readv per buffer would cost a syscall per 4 KiB.
  std::uint64_t budget = max_bytes;
  rx_iovs_.clear();
  rx_rooms_.clear();
  std::size_t chains = 0;
  std::uint64_t total = 0;
  while (budget > 0 && chains < max_buffers) {
    if (chains == rx_chains_.size()) rx_chains_.emplace_back();
    DescriptorChain& chain = rx_chains_[chains];
    if (chains > 0 && !PopRxChain(&chain)) break;  // none posted, or the driver broke the ring
    std::uint64_t room =
        std::min<std::uint64_t>({chain.writable_bytes - kHeaderSize, budget, kMaxPayload});
    const std::size_t had = rx_iovs_.size();
    if (room == 0 || !AppendWritableIoVecs(chain, room, &rx_iovs_)) {
      rx_iovs_.resize(had);
      if (chains > 0) rx_queue_->UndoPop();
      break;
    }
    if (rx_iovs_.size() > kMaxIov) {
      if (chains > 0) {
        rx_iovs_.resize(had);
        rx_queue_->UndoPop();
        break;
      }
      // A first chain of more pieces than readv takes is filled as far as they reach.
      rx_iovs_.resize(kMaxIov);
      room = 0;
      for (const iovec& iov : rx_iovs_) room += iov.iov_len;
    }
    rx_rooms_.push_back(static_cast<std::uint32_t>(room));
    budget -= room;
    total += room;
    ++chains;
  }
  Read read;
  read.error = EAGAIN;
  if (chains == 0 && rx_chains_[0].writable_bytes == kHeaderSize) {
    read.no_room = true;  // the connection decides what the buffer carries instead
    metrics_.rx_short_buffers->Add();
    return read;
  }
  if (chains > 0 && !broken_) {
    do {
      read.n = ::readv(fd, rx_iovs_.data(), static_cast<int>(rx_iovs_.size()));
    } while (read.n < 0 && errno == EINTR);
    if (read.n < 0) read.error = errno;
  }
  // Every chain gets a packet in order until the bytes run out; the ones left over go back
  // to the ring, last popped first (ProcessRx puts back the first one when nothing was read).
  std::uint64_t left = read.n > 0 ? static_cast<std::uint64_t>(read.n) : 0;
  for (; read.used < chains && left > 0; ++read.used) {
    const auto len =
        static_cast<std::uint32_t>(std::min<std::uint64_t>(rx_rooms_[read.used], left));
    PublishRx(rx_chains_[read.used], rw, len);
    left -= len;
  }
  // Counted once per read: the counters are atomics, too dear for every 4 KiB.
  if (read.used > 0) {
    metrics_.rx_packets->Add(read.used);
    metrics_.rx_bytes->Add(static_cast<std::uint64_t>(read.n));
  }
  for (std::size_t i = std::max<std::size_t>(read.used, 1); i < chains; ++i) {
    rx_queue_->UndoPop();
  }
  read.filled = read.n > 0 && static_cast<std::uint64_t>(read.n) == total;
  return read;
}

void VsockDevice::PublishRx(const DescriptorChain& chain, Header header, std::uint32_t payload) {
  header.len = payload;
  // Checked by the caller: the chain is writable and holds at least a header. The usual
  // layout (Linux's: header and payload in one buffer) is encoded in place.
  const std::span<std::uint8_t> first = chain.writable().front().host;
  if (first.size() >= kHeaderSize) {
    header.EncodeTo(first.first<kHeaderSize>());
  } else {
    (void)chain.CopyToWritable(0, header.Encode());
  }
  rx_queue_->AddUsed(chain.head, static_cast<std::uint32_t>(kHeaderSize) + payload);
}

// --- Event queue -------------------------------------------------------------------------------

void VsockDevice::ProcessEventQueue() {
  if (!pending_transport_reset_ || !event_queue_ || broken_) return;
  for (;;) {
    auto popped = event_queue_->Pop();
    if (!popped.ok()) return MarkBroken(popped.status());
    if (!popped->has_value()) {
      if (event_queue_->EnableNotification()) continue;
      return;  // delivered when the guest adds an event buffer
    }
    const DescriptorChain& chain = **popped;
    const std::uint32_t id = kEventTransportReset;
    if (chain.readable_count != 0 ||
        !chain.CopyToWritable(0, std::span(reinterpret_cast<const std::uint8_t*>(&id),
                                           sizeof(id)))) {
      return MarkBroken(absl::InvalidArgumentError(
          absl::StrCat("event chain ", chain.head, " cannot hold a virtio_vsock_event")));
    }
    event_queue_->AddUsed(chain.head, sizeof(id));
    pending_transport_reset_ = false;
    return;
  }
}

void VsockDevice::InterruptIfNeeded() {
  if (broken_ || signals_ == nullptr) return;
  bool needed = false;
  for (std::optional<Queue>* q : {&rx_queue_, &tx_queue_, &event_queue_}) {
    if (q->has_value() && (*q)->NeedsInterrupt()) needed = true;
  }
  if (needed) signals_->SignalUsedBuffer();
}

void VsockDevice::MarkBroken(const absl::Status& why) {
  metrics_.invalid_chains->Add();
  EMBER_LOG(kWarn) << name() << ": driver error, device needs reset: " << why;
  broken_ = true;
  if (signals_ != nullptr) signals_->MarkNeedsReset();
}

}  // namespace ember::virtio::vsock
