#include "virtio/net/net_device.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "virtio/spec.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"

namespace ember::virtio::net {
namespace {

// Tokens of the device's EventSet.
constexpr std::uint64_t kTokenTap = 0;
constexpr std::uint64_t kTokenRxTimer = 1;
constexpr std::uint64_t kTokenTxTimer = 2;
constexpr std::uint64_t kTokenWake = 3;

// Frames read from the tap per wake-up before the loop gets to run other handlers; the tap
// stays watched, so the next wake-up continues.
constexpr int kRxFramesPerWakeup = 64;

constexpr std::uint16_t kStatusLinkUp = 1;
constexpr std::size_t kNumBuffersOffset = offsetof(VirtioNetHeader, num_buffers);

// struct virtio_net_config (spec 5.1.4) up to max_virtqueue_pairs.
constexpr std::size_t kConfigSpaceSize = 10;

std::uint64_t Features(const NetConfig& config) {
  std::uint64_t features =
      FeatureBit(kFeatureVersion1) | FeatureBit(kFeatureEventIdx) |
      FeatureBit(kFeatureIndirectDesc) | FeatureBit(kFeatureCsum) |
      FeatureBit(kFeatureGuestCsum) | FeatureBit(kFeatureGuestTso4) |
      FeatureBit(kFeatureGuestTso6) | FeatureBit(kFeatureGuestUfo) |
      FeatureBit(kFeatureHostTso4) | FeatureBit(kFeatureHostTso6) | FeatureBit(kFeatureHostUfo) |
      FeatureBit(kFeatureMrgRxbuf) | FeatureBit(kFeatureStatus);
  if (config.guest_mac) features |= FeatureBit(kFeatureMac);
  return features;
}

std::vector<std::uint8_t> MakeConfigSpace(const NetConfig& config) {
  std::vector<std::uint8_t> bytes(kConfigSpaceSize, 0);
  if (config.guest_mac) std::copy(config.guest_mac->begin(), config.guest_mac->end(), bytes.begin());
  bytes[6] = static_cast<std::uint8_t>(kStatusLinkUp);
  bytes[7] = 0;
  bytes[8] = 1;  // max_virtqueue_pairs: no multiqueue
  return bytes;
}

// The tap offloads matching what the guest driver can receive: it must never see a frame
// it did not negotiate (a GSO frame without GUEST_TSO4, a partial checksum without
// GUEST_CSUM). The kernel refuses TSO without checksum offload.
unsigned TapOffloads(std::uint64_t acked) {
  if ((acked & FeatureBit(kFeatureGuestCsum)) == 0) return 0;
  unsigned flags = kTunOffloadCsum;
  if ((acked & FeatureBit(kFeatureGuestTso4)) != 0) flags |= kTunOffloadTso4;
  if ((acked & FeatureBit(kFeatureGuestTso6)) != 0) flags |= kTunOffloadTso6;
  if ((acked & FeatureBit(kFeatureGuestUfo)) != 0) flags |= kTunOffloadUfo;
  return flags;
}

}  // namespace

NetDevice::Metrics::Metrics(base::MetricsRegistry& registry, const std::string& group)
    : rx_queue_events(registry.Get(group, "rx_queue_events")),
      tx_queue_events(registry.Get(group, "tx_queue_events")),
      rx_frames(registry.Get(group, "rx_frames")),
      rx_bytes(registry.Get(group, "rx_bytes")),
      tx_frames(registry.Get(group, "tx_frames")),
      tx_bytes(registry.Get(group, "tx_bytes")),
      rx_no_buffers(registry.Get(group, "rx_no_buffers")),
      rx_frames_too_large(registry.Get(group, "rx_frames_too_large")),
      tx_malformed_frames(registry.Get(group, "tx_malformed_frames")),
      tap_read_fails(registry.Get(group, "tap_read_fails")),
      tap_write_fails(registry.Get(group, "tap_write_fails")),
      invalid_chains(registry.Get(group, "invalid_chains")),
      rx_rate_limiter_throttled(registry.Get(group, "rx_rate_limiter_throttled")),
      tx_rate_limiter_throttled(registry.Get(group, "tx_rate_limiter_throttled")) {}

absl::StatusOr<std::unique_ptr<NetDevice>> NetDevice::Create(const NetConfig& config,
                                                             base::MetricsRegistry& metrics,
                                                             const Clock& clock) {
  if (config.host_dev_name.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("network interface ", config.iface_id, ": host_dev_name (the tap) is empty"));
  }
  auto tap = LinuxTap::Open(config.host_dev_name, config.create_tap ? LinuxTap::Mode::kCreate
                                                                    : LinuxTap::Mode::kExisting);
  if (!tap.ok()) {
    return absl::Status(tap.status().code(), absl::StrCat("network interface ", config.iface_id,
                                                          ": ", tap.status().message()));
  }
  return CreateWithTap(config, std::move(tap).value(), metrics, clock);
}

absl::StatusOr<std::unique_ptr<NetDevice>> NetDevice::CreateWithTap(
    const NetConfig& config, std::unique_ptr<Tap> tap, base::MetricsRegistry& metrics,
    const Clock& clock) {
  if (config.queue_size < 2 || config.queue_size > kMaxQueueSize ||
      (config.queue_size & (config.queue_size - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("network interface ", config.iface_id,
                                                   ": queue size ", config.queue_size,
                                                   " is not a power of two in [2, 32768]"));
  }
  EMBER_ASSIGN_OR_RETURN(EventSet events, EventSet::Create());
  EMBER_ASSIGN_OR_RETURN(RateLimiter rx, RateLimiter::Create(config.rx_rate_limiter, clock));
  EMBER_ASSIGN_OR_RETURN(RateLimiter tx, RateLimiter::Create(config.tx_rate_limiter, clock));
  // The tap is registered silent; Activate starts watching it.
  EMBER_RETURN_IF_ERROR(events.Add(tap->fd(), 0, kTokenTap));
  EMBER_RETURN_IF_ERROR(events.Add(rx.timer_fd(), EPOLLIN, kTokenRxTimer));
  EMBER_RETURN_IF_ERROR(events.Add(tx.timer_fd(), EPOLLIN, kTokenTxTimer));
  EMBER_ASSIGN_OR_RETURN(base::EventFd wake, base::EventFd::Create());
  EMBER_RETURN_IF_ERROR(events.Add(wake.Get(), EPOLLIN, kTokenWake));
  return std::unique_ptr<NetDevice>(new NetDevice(config, std::move(tap), std::move(events),
                                                  std::move(wake), std::move(rx), std::move(tx),
                                                  metrics));
}

NetDevice::NetDevice(const NetConfig& config, std::unique_ptr<Tap> tap, EventSet events,
                     base::EventFd wake, RateLimiter rx_limiter, RateLimiter tx_limiter,
                     base::MetricsRegistry& metrics)
    : config_(config),
      features_(Features(config)),
      queue_sizes_{config.queue_size, config.queue_size},
      config_space_(MakeConfigSpace(config)),
      metrics_(metrics, "net_" + config.iface_id),
      tap_(std::move(tap)),
      events_(std::move(events)),
      wake_(std::move(wake)),
      rx_limiter_(std::move(rx_limiter)),
      tx_limiter_(std::move(tx_limiter)),
      rx_frame_(kMaxFrameBytes) {}

NetDevice::~NetDevice() = default;

std::uint32_t NetDevice::device_id() const { return kDeviceIdNet; }

void NetDevice::ReadConfig(std::uint64_t offset, std::span<std::uint8_t> data) const {
  for (std::size_t i = 0; i < data.size(); ++i) {
    data[i] = offset + i < config_space_.size() ? config_space_[offset + i] : 0;
  }
}

bool NetDevice::WriteConfig(std::uint64_t, std::span<const std::uint8_t>) {
  // The MAC is writable only with VIRTIO_NET_F_CTRL_MAC_ADDR, which is not offered.
  return false;
}

absl::Status NetDevice::Activate(ActivationContext context) {
  if (context.queues.size() != 2 || !context.queues[kRxQueue] || !context.queues[kTxQueue]) {
    return absl::FailedPreconditionError(name() +
                                         ": the driver did not enable both the RX and TX queue");
  }
  std::lock_guard lock(mu_);
  const std::uint64_t acked = context.features;
  const bool v1_header =
      (acked & (FeatureBit(kFeatureVersion1) | FeatureBit(kFeatureMrgRxbuf))) != 0;
  const std::size_t header_bytes = v1_header ? sizeof(VirtioNetHeader) : 10;
  EMBER_RETURN_IF_ERROR(tap_->SetVnetHeaderSize(static_cast<int>(header_bytes)));
  EMBER_RETURN_IF_ERROR(tap_->SetOffloads(TapOffloads(acked)));
  acked_features_ = acked;
  header_bytes_ = header_bytes;
  rx_queue_ = std::move(context.queues[kRxQueue]);
  tx_queue_ = std::move(context.queues[kTxQueue]);
  signals_ = context.signals;
  broken_ = false;
  rx_used_added_ = false;
  tx_used_added_ = false;
  // The loop calls back when the tap has a frame. A frame already waiting from before a reset
  // raises no tap event, so wake the loop for it.
  WatchTap(true);
  if (rx_frame_len_ != 0) wake_.Signal();
  return absl::OkStatus();
}

void NetDevice::Reset() {
  std::lock_guard lock(mu_);
  WatchTap(false);
  rx_queue_.reset();
  tx_queue_.reset();
  signals_ = nullptr;
  broken_ = false;
  // A frame waiting for RX buffers stays: the re-initialised driver gets it.
}

std::vector<EventSource> NetDevice::EventSources() {
  return {{events_.fd(), [this] { ProcessEvents(); }}};
}

std::vector<std::optional<QueuePositions>> NetDevice::SaveQueuePositions() const {
  std::lock_guard lock(mu_);
  if (!rx_queue_ || !tx_queue_) return {};
  return {QueuePositions{rx_queue_->next_avail(), rx_queue_->next_used()},
          QueuePositions{tx_queue_->next_avail(), tx_queue_->next_used()}};
}

DeviceState NetDevice::SaveDeviceState() const {
  std::lock_guard lock(mu_);
  return NetState{rx_limiter_.SaveState(), tx_limiter_.SaveState()};
}

absl::Status NetDevice::RestoreDeviceState(const DeviceState& state) {
  EMBER_ASSIGN_OR_RETURN(NetState saved, DeviceStateAs<NetState>(state, name()));
  std::lock_guard lock(mu_);
  rx_limiter_.RestoreState(saved.rx_rate_limiter);
  tx_limiter_.RestoreState(saved.tx_rate_limiter);
  return absl::OkStatus();
}

bool NetDevice::watching_tap() const {
  std::lock_guard lock(mu_);
  return watching_tap_;
}

void NetDevice::ProcessQueue(std::size_t index) {
  std::lock_guard lock(mu_);
  if (index == kRxQueue) {
    metrics_.rx_queue_events->Add();
    ProcessRx();
  } else if (index == kTxQueue) {
    metrics_.tx_queue_events->Add();
    ProcessTx();
  }
}

void NetDevice::ProcessEvents() {
  std::array<epoll_event, 4> ready{};
  const std::size_t n = events_.Poll(ready);
  std::lock_guard lock(mu_);
  for (std::size_t i = 0; i < n; ++i) {
    switch (ready[i].data.u64) {
      case kTokenTap:
        ProcessRx();
        break;
      case kTokenRxTimer:
        rx_limiter_.OnTimer();
        ProcessRx();
        break;
      case kTokenTxTimer:
        tx_limiter_.OnTimer();
        ProcessTx();
        break;
      case kTokenWake:
        wake_.Consume();
        ProcessRx();
        break;
      default:
        break;
    }
  }
}

void NetDevice::UpdateRateLimiters(const std::optional<TokenBucketConfig>& rx_bandwidth,
                                   const std::optional<TokenBucketConfig>& rx_ops,
                                   const std::optional<TokenBucketConfig>& tx_bandwidth,
                                   const std::optional<TokenBucketConfig>& tx_ops) {
  std::lock_guard lock(mu_);
  rx_limiter_.Update(rx_bandwidth, rx_ops);
  tx_limiter_.Update(tx_bandwidth, tx_ops);
}

void NetDevice::WatchTap(bool watch) {
  if (watch == watching_tap_) return;
  absl::Status status = events_.Modify(tap_->fd(), watch ? std::uint32_t{EPOLLIN} : 0u, kTokenTap);
  if (!status.ok()) {
    EMBER_LOG(kError) << name() << ": cannot change interest in the tap: " << status;
    return;
  }
  watching_tap_ = watch;
}

void NetDevice::ProcessRx() {
  if (!Active()) {
    WatchTap(false);
    return;
  }
  int budget = kRxFramesPerWakeup;
  // Counted once per call rather than per frame (two atomic adds per frame).
  std::uint64_t frames = 0;
  std::uint64_t bytes = 0;
  for (;;) {
    if (rx_frame_len_ == 0) {
      if (budget-- == 0) break;  // still watched: the loop calls back for the rest
      const ssize_t n = ::read(tap_->fd(), rx_frame_.data(), rx_frame_.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) {
          metrics_.tap_read_fails->Add();
          EMBER_LOG(kDebug) << name() << ": " << base::ErrnoError("read", tap_->name());
        }
        WatchTap(true);
        break;
      }
      if (static_cast<std::size_t>(n) <= header_bytes_) {
        metrics_.tap_read_fails->Add();  // a runt without a frame after the header
        continue;
      }
      rx_frame_len_ = static_cast<std::size_t>(n);
      rx_frame_charged_ = false;
    }
    if (!rx_frame_charged_) {
      if (!rx_limiter_.ConsumeRequest(rx_frame_len_ - header_bytes_)) {
        // The limiter's timer brings the device back; until then the tap is not read.
        metrics_.rx_rate_limiter_throttled->Add();
        WatchTap(false);
        break;
      }
      rx_frame_charged_ = true;
    }
    const Delivery delivery = DeliverFrame();
    if (delivery == Delivery::kBroken) break;
    if (delivery == Delivery::kNoBuffers) {
      metrics_.rx_no_buffers->Add();
      WatchTap(false);
      break;
    }
    if (delivery == Delivery::kDelivered) {
      ++frames;
      bytes += rx_frame_len_ - header_bytes_;
    }
    rx_frame_len_ = 0;
  }
  if (frames != 0) {
    metrics_.rx_frames->Add(frames);
    metrics_.rx_bytes->Add(bytes);
  }
  if (rx_queue_) InterruptIfNeeded(*rx_queue_, &rx_used_added_);
}

NetDevice::Delivery NetDevice::DeliverFrame() {
  const bool mergeable = (acked_features_ & FeatureBit(kFeatureMrgRxbuf)) != 0;
  rx_chains_.clear();
  auto undo = [&] {
    for (std::size_t i = 0; i < rx_chains_.size(); ++i) rx_queue_->UndoPop();
    rx_chains_.clear();
  };
  std::uint8_t* num_buffers_lo = nullptr;
  std::uint8_t* num_buffers_hi = nullptr;
  std::size_t offset = 0;
  while (offset < rx_frame_len_) {
    if (rx_chains_.size() >= rx_queue_->size()) {
      // Even the whole ring cannot hold it: waiting would wait forever.
      undo();
      metrics_.rx_frames_too_large->Add();
      return Delivery::kTooLarge;
    }
    auto popped = rx_queue_->Pop();
    if (!popped.ok()) {
      MarkBroken(popped.status());
      return Delivery::kBroken;
    }
    if (!popped->has_value()) {
      // Ask for a notification past the buffers already seen; if more arrived meanwhile,
      // go on without one.
      if (rx_queue_->EnableNotification()) continue;
      undo();
      return Delivery::kNoBuffers;
    }
    const DescriptorChain& chain = **popped;
    if (chain.readable_count != 0 || chain.writable_bytes < header_bytes_) {
      MarkBroken(absl::InvalidArgumentError(absl::StrCat(
          "RX chain ", chain.head, " has device-readable buffers or is shorter than the ",
          header_bytes_, "-byte header")));
      return Delivery::kBroken;
    }
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(chain.writable_bytes, rx_frame_len_ - offset));
    if (!mergeable && n < rx_frame_len_) {
      // Without MRG_RXBUF a frame must fit one chain; the guest sized its buffers for less.
      rx_queue_->UndoPop();
      metrics_.rx_frames_too_large->Add();
      return Delivery::kTooLarge;
    }
    if (!chain.CopyToWritable(0, std::span(rx_frame_).subspan(offset, n))) {
      MarkBroken(absl::InternalError("RX chain shorter than its writable length"));
      return Delivery::kBroken;
    }
    if (rx_chains_.empty()) {
      num_buffers_lo = chain.WritableByte(kNumBuffersOffset);
      num_buffers_hi = chain.WritableByte(kNumBuffersOffset + 1);
    }
    rx_chains_.emplace_back(chain.head, static_cast<std::uint32_t>(n));
    offset += n;
  }
  if (header_bytes_ == sizeof(VirtioNetHeader) && num_buffers_lo != nullptr &&
      num_buffers_hi != nullptr) {
    // num_buffers is little-endian; 1 without MRG_RXBUF (spec 5.1.6.4).
    const auto count = static_cast<std::uint16_t>(rx_chains_.size());
    *num_buffers_lo = static_cast<std::uint8_t>(count & 0xff);
    *num_buffers_hi = static_cast<std::uint8_t>(count >> 8);
  }
  for (const auto& [head, len] : rx_chains_) rx_queue_->AddUsed(head, len);
  rx_used_added_ = true;
  return Delivery::kDelivered;
}

bool NetDevice::ValidTxFrame(const DescriptorChain& chain) {
  auto drop = [&](const char* why) {
    metrics_.tx_malformed_frames->Add();
    EMBER_LOG(kDebug) << name() << ": dropping TX chain " << chain.head << ": " << why;
    return false;
  };
  if (chain.writable_bytes != 0 || chain.readable_count != chain.descriptors.size()) {
    return drop("device-writable buffer in a TX chain");
  }
  if (chain.readable_bytes <= header_bytes_) return drop("no frame after the header");
  if (chain.readable_bytes > kMaxFrameBytes) return drop("frame larger than 65562 bytes");
  VirtioNetHeader header{};
  // VirtioNetHeader is the little-endian wire format; header_bytes_ <= sizeof(header).
  if (!chain.CopyFromReadable(0, std::span(reinterpret_cast<std::uint8_t*>(&header),
                                           header_bytes_))) {
    return drop("unreadable header");
  }
  const std::uint64_t frame_len = chain.readable_bytes - header_bytes_;
  if ((header.flags & ~kHeaderFlagNeedsCsum) != 0) return drop("flags other than NEEDS_CSUM");
  if ((header.flags & kHeaderFlagNeedsCsum) != 0) {
    if ((acked_features_ & FeatureBit(kFeatureCsum)) == 0) {
      return drop("NEEDS_CSUM without VIRTIO_NET_F_CSUM");
    }
    if (std::uint64_t{header.csum_start} + header.csum_offset + 2 > frame_len) {
      return drop("checksum position outside the frame");
    }
  }
  unsigned needed = 0;
  switch (header.gso_type) {
    case kGsoNone:
      return true;
    case kGsoTcpV4:
      needed = kFeatureHostTso4;
      break;
    case kGsoTcpV6:
      needed = kFeatureHostTso6;
      break;
    case kGsoUdp:
      needed = kFeatureHostUfo;
      break;
    default:
      return drop("unknown or ECN gso_type");
  }
  if ((acked_features_ & FeatureBit(needed)) == 0) return drop("GSO type not negotiated");
  if (header.gso_size == 0) return drop("GSO frame with gso_size 0");
  if ((header.flags & kHeaderFlagNeedsCsum) == 0) return drop("GSO frame without NEEDS_CSUM");
  return true;
}

void NetDevice::ProcessTx() {
  if (!tx_queue_ || broken_) return;
  bool throttled = false;
  // Counted once per call: two atomic adds per frame showed up next to the writev itself.
  std::uint64_t frames = 0;
  std::uint64_t bytes = 0;
  do {
    tx_queue_->DisableNotification();
    for (;;) {
      if (tx_limiter_.blocked()) {
        throttled = true;
        break;
      }
      // One chain reused for every frame: no descriptor vector built and moved per frame.
      auto popped = tx_queue_->Pop(&tx_chain_);
      if (!popped.ok()) {
        MarkBroken(popped.status());
        break;
      }
      if (!*popped) break;
      const DescriptorChain& chain = tx_chain_;
      if (ValidTxFrame(chain)) {
        const std::uint64_t frame_len = chain.readable_bytes - header_bytes_;
        if (!tx_limiter_.ConsumeRequest(frame_len)) {
          // Retried when the limiter's timer fires; notifications stay off until then.
          metrics_.tx_rate_limiter_throttled->Add();
          tx_queue_->UndoPop();
          throttled = true;
          break;
        }
        const bool mapped = chain.ReadableIoVecs(0, chain.readable_bytes, &tx_iovs_);
        ssize_t written = -1;
        if (mapped) {
          do {
            // A frame in one buffer (Linux pushes the header in front of a linear skb) goes
            // out with write(), which spares the kernel importing an iovec array.
            written = tx_iovs_.size() == 1
                          ? ::write(tap_->fd(), tx_iovs_[0].iov_base, tx_iovs_[0].iov_len)
                          : ::writev(tap_->fd(), tx_iovs_.data(), static_cast<int>(tx_iovs_.size()));
          } while (written < 0 && errno == EINTR);
        }
        if (written < 0) {
          // The tap itself drops frames it cannot queue; a failure here is a frame the
          // kernel refused (a header it could not parse, say).
          metrics_.tap_write_fails->Add();
          EMBER_LOG(kDebug) << name() << ": " << base::ErrnoError("writev", tap_->name());
        } else {
          ++frames;
          bytes += frame_len;
        }
      }
      tx_queue_->AddUsed(chain.head, 0);
      tx_used_added_ = true;
    }
  } while (!throttled && !broken_ && tx_queue_->EnableNotification());
  if (frames != 0) {
    metrics_.tx_frames->Add(frames);
    metrics_.tx_bytes->Add(bytes);
  }
  InterruptIfNeeded(*tx_queue_, &tx_used_added_);
}

void NetDevice::InterruptIfNeeded(Queue& queue, bool* used_added) {
  if (!*used_added || broken_) return;
  *used_added = false;
  if (queue.NeedsInterrupt() && signals_ != nullptr) signals_->SignalUsedBuffer();
}

void NetDevice::MarkBroken(const absl::Status& why) {
  metrics_.invalid_chains->Add();
  EMBER_LOG(kWarn) << name() << ": driver error, device needs reset: " << why;
  broken_ = true;
  WatchTap(false);
  if (signals_ != nullptr) signals_->MarkNeedsReset();
}

}  // namespace ember::virtio::net
