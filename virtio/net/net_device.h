#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "virtio/device.h"
#include "virtio/event_set.h"
#include "virtio/net/config.h"
#include "virtio/net/tap.h"
#include "virtio/rate_limiter.h"
#include "vmm/base/event_fd.h"
#include "vmm/base/metrics.h"

namespace ember::virtio::net {

// Feature bits (spec 5.1.3).
inline constexpr unsigned kFeatureCsum = 0;
inline constexpr unsigned kFeatureGuestCsum = 1;
inline constexpr unsigned kFeatureMac = 5;
inline constexpr unsigned kFeatureGuestTso4 = 7;
inline constexpr unsigned kFeatureGuestTso6 = 8;
inline constexpr unsigned kFeatureGuestUfo = 10;
inline constexpr unsigned kFeatureHostTso4 = 11;
inline constexpr unsigned kFeatureHostTso6 = 12;
inline constexpr unsigned kFeatureHostUfo = 14;
inline constexpr unsigned kFeatureMrgRxbuf = 15;
inline constexpr unsigned kFeatureStatus = 16;

// struct virtio_net_hdr_v1 (spec 5.1.6): what precedes every frame, on both queues and on
// the tap (TUNSETVNETHDRSZ 12).
struct VirtioNetHeader {
  std::uint8_t flags;
  std::uint8_t gso_type;
  std::uint16_t hdr_len;
  std::uint16_t gso_size;
  std::uint16_t csum_start;
  std::uint16_t csum_offset;
  std::uint16_t num_buffers;
};
static_assert(sizeof(VirtioNetHeader) == 12);
inline constexpr std::uint8_t kHeaderFlagNeedsCsum = 1;
inline constexpr std::uint8_t kHeaderFlagDataValid = 2;
inline constexpr std::uint8_t kGsoNone = 0;
inline constexpr std::uint8_t kGsoTcpV4 = 1;
inline constexpr std::uint8_t kGsoUdp = 3;
inline constexpr std::uint8_t kGsoTcpV6 = 4;
inline constexpr std::uint8_t kGsoEcn = 0x80;

// The largest frame on either queue, header included: a 64 KiB GSO frame plus an Ethernet
// header and a VLAN tag, plus the virtio-net header (Firecracker's MAX_BUFFER_SIZE).
inline constexpr std::size_t kMaxFrameBytes = 65562;

inline constexpr std::size_t kRxQueue = 0;
inline constexpr std::size_t kTxQueue = 1;

// virtio-net (spec 5.1) on a tap: one RX and one TX queue, each behind its own rate limiter.
//
// RX never drops silently. A frame read from the tap waits in the device until the guest has
// buffers for it; meanwhile the device stops watching the tap (the kernel queues, then drops
// and counts, further frames), and resumes when the guest notifies the RX queue or the RX
// rate limiter's timer fires. A frame that cannot fit even the whole ring is dropped and
// counted (rx_frames_too_large). TX frames that are too large, carry no payload, sit in
// device-writable buffers or have an inconsistent header are dropped and counted
// (tx_malformed_frames); the chain goes back to the guest.
//
// Threads: ReadConfig/Activate/Reset come from vCPU threads through the transport;
// ProcessQueue and the EventSource callback run on the VMM loop thread. mu_ guards the
// state they share. A chain that breaks the virtqueue rules marks the device
// DEVICE_NEEDS_RESET (net_<id>.invalid_chains) and stops it until the driver resets it.
class NetDevice final : public VirtioDevice {
 public:
  // Opens config.host_dev_name as a tap (LinuxTap::Open) and builds the device.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<NetDevice>> Create(
      const NetConfig& config, base::MetricsRegistry& metrics = base::MetricsRegistry::Global(),
      const Clock& clock = Clock::System());
  // The same on a tap the caller opened (tests pass a FakeTap). Takes ownership of `tap`;
  // borrows `metrics` and `clock`, which outlive the device.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<NetDevice>> CreateWithTap(
      const NetConfig& config, std::unique_ptr<Tap> tap,
      base::MetricsRegistry& metrics = base::MetricsRegistry::Global(),
      const Clock& clock = Clock::System());
  ~NetDevice() override;

  // VirtioDevice.
  [[nodiscard]] std::uint32_t device_id() const override;
  [[nodiscard]] std::uint64_t offered_features() const override { return features_; }
  [[nodiscard]] std::span<const std::uint16_t> queue_max_sizes() const override {
    return queue_sizes_;
  }
  [[nodiscard]] std::string name() const override { return "net_" + config_.iface_id; }
  void ReadConfig(std::uint64_t offset, std::span<std::uint8_t> data) const override;
  [[nodiscard]] bool WriteConfig(std::uint64_t offset,
                                 std::span<const std::uint8_t> data) override;
  [[nodiscard]] absl::Status Activate(ActivationContext context) override;
  void Reset() override;
  void ProcessQueue(std::size_t index) override;
  // One source: the device's EventSet (tap readable, the rate limiters' timers, a wake-up).
  [[nodiscard]] std::vector<EventSource> EventSources() override;
  // Snapshots: nothing is in flight between calls (the tap is read and written
  // synchronously), so only the ring positions are state. A frame waiting for RX buffers is
  // not saved; the network may lose a frame, as it may anyway.
  [[nodiscard]] std::vector<std::optional<QueuePositions>> SaveQueuePositions() const override;
  // The RX then TX rate limiters' bucket levels.
  [[nodiscard]] DeviceState SaveDeviceState() const override;
  [[nodiscard]] absl::Status RestoreDeviceState(const DeviceState& state) override;

  // Loop thread: the EventSet is readable.
  void ProcessEvents();
  // Loop thread (the control path posts it there): changes limits while the VM runs.
  void UpdateRateLimiters(const std::optional<TokenBucketConfig>& rx_bandwidth,
                          const std::optional<TokenBucketConfig>& rx_ops,
                          const std::optional<TokenBucketConfig>& tx_bandwidth,
                          const std::optional<TokenBucketConfig>& tx_ops);

  // Whether the device currently asks to be woken for tap input; for tests and metrics.
  [[nodiscard]] bool watching_tap() const;

 private:
  struct Metrics {
    Metrics(base::MetricsRegistry& registry, const std::string& group);
    base::Metric* rx_queue_events;
    base::Metric* tx_queue_events;
    base::Metric* rx_frames;
    base::Metric* rx_bytes;
    base::Metric* tx_frames;
    base::Metric* tx_bytes;
    base::Metric* rx_no_buffers;       // times a frame had to wait for guest buffers
    base::Metric* rx_frames_too_large; // dropped: larger than the guest's whole RX ring
    base::Metric* tx_malformed_frames; // dropped: too large, header only, bad header, ...
    base::Metric* tap_read_fails;
    base::Metric* tap_write_fails;
    base::Metric* invalid_chains;      // the driver broke the virtqueue: NEEDS_RESET
    base::Metric* rx_rate_limiter_throttled;
    base::Metric* tx_rate_limiter_throttled;
  };

  enum class Delivery { kDelivered, kNoBuffers, kTooLarge, kBroken };

  NetDevice(const NetConfig& config, std::unique_ptr<Tap> tap, EventSet events,
            base::EventFd wake, RateLimiter rx_limiter, RateLimiter tx_limiter, base::MetricsRegistry& metrics);

  // All of these run with mu_ held.
  void ProcessRx();
  void ProcessTx();
  [[nodiscard]] Delivery DeliverFrame();
  // Checks a TX chain; false (and counted) when the frame must be dropped.
  [[nodiscard]] bool ValidTxFrame(const DescriptorChain& chain);
  void WatchTap(bool watch);
  void InterruptIfNeeded(Queue& queue, bool* used_added);
  void MarkBroken(const absl::Status& why);
  [[nodiscard]] bool Active() const { return rx_queue_.has_value() && !broken_; }

  const NetConfig config_;
  const std::uint64_t features_;
  const std::array<std::uint16_t, 2> queue_sizes_;
  std::vector<std::uint8_t> config_space_;
  Metrics metrics_;
  std::unique_ptr<Tap> tap_;
  EventSet events_;
  // Signalled (any thread) to make the loop run ProcessRx without a tap event.
  const base::EventFd wake_;

  mutable std::mutex mu_;
  RateLimiter rx_limiter_;                 // guarded by mu_
  RateLimiter tx_limiter_;                 // guarded by mu_
  std::optional<Queue> rx_queue_;          // guarded by mu_; set while activated
  std::optional<Queue> tx_queue_;          // guarded by mu_
  DeviceSignals* signals_ = nullptr;       // guarded by mu_
  std::uint64_t acked_features_ = 0;       // guarded by mu_
  std::size_t header_bytes_ = sizeof(VirtioNetHeader);  // guarded by mu_
  bool broken_ = false;                    // guarded by mu_
  bool watching_tap_ = false;              // guarded by mu_
  bool rx_used_added_ = false;             // guarded by mu_
  bool tx_used_added_ = false;             // guarded by mu_
  // The frame read from the tap and not yet in the guest (header included); guarded by mu_.
  std::vector<std::uint8_t> rx_frame_;
  std::size_t rx_frame_len_ = 0;           // guarded by mu_; 0: no frame waiting
  bool rx_frame_charged_ = false;          // guarded by mu_; rate limiter already paid
  // Chains popped for one MRG_RXBUF frame: (head, bytes); guarded by mu_; reused.
  std::vector<std::pair<std::uint16_t, std::uint32_t>> rx_chains_;
  // Reused per frame so that the data path allocates nothing; guarded by mu_.
  DescriptorChain tx_chain_;
  IoVecs tx_iovs_;
};

}  // namespace ember::virtio::net
