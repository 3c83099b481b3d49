#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "virtio/block/config.h"
#include "virtio/block/engine.h"
#include "virtio/block/request.h"
#include "virtio/device.h"
#include "virtio/rate_limiter.h"
#include "vmm/base/event_fd.h"
#include "vmm/base/metrics.h"
#include "vmm/base/unique_fd.h"

namespace ember::virtio::block {

// virtio-blk (spec 5.2): one request queue, IN/OUT/FLUSH/GET_ID/DISCARD/WRITE_ZEROES, served
// by an io_uring or synchronous engine, optionally rate limited.
//
// Threads: register-side calls (ReadConfig, Activate, Reset) come from vCPU threads through
// the transport; ProcessQueue, ProcessCompletions and ProcessRateLimiterTimer run on the VMM
// loop thread. mu_ guards the activation state they share and the backing file; config_mu_
// guards the configuration space, which a drive swap (ReplaceFile) rewrites while vCPUs may
// read it.
//
// A request the device cannot serve (out of range, a write to a read-only drive, an I/O
// error) completes with VIRTIO_BLK_S_IOERR or _UNSUPP and the device carries on. A chain
// that breaks the virtqueue rules marks the device DEVICE_NEEDS_RESET, is counted in
// block_<id>.invalid_chains, and stops the device until the driver resets it.
//
// What a guest can make the host hold is bounded: one request per descriptor head at most
// (a head made available again while its request is in flight breaks the rules), so at most
// queue-size requests are in flight and the io_uring completion queue cannot overflow; one
// pass over the queue takes at most queue-size requests and then yields to the VMM loop (the
// rest follows from the resume eventfd), since that thread also serves the control socket
// and the other devices; a reset or a snapshot waits for requests in flight at most
// BlockConfig::in_flight_wait_limit.
class BlockDevice final : public VirtioDevice {
 public:
  // Opens `config.path` (read-only drives O_RDONLY; O_DIRECT when asked) and sets up the
  // engine. Errors: InvalidArgument for the drive file's faults, which are its configurer's
  // (missing or unopenable, neither a regular file nor a block device, a size not a multiple
  // of 512 bytes); another code for the host's (an io_uring the kernel refuses). Borrows
  // `metrics` and `clock`, which outlive the device.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<BlockDevice>> Create(
      const BlockConfig& config,
      base::MetricsRegistry& metrics = base::MetricsRegistry::Global(),
      const Clock& clock = Clock::System());
  // Tests only: the same over the engine `make_engine` builds on the opened file, whatever
  // config.engine says (an engine that holds requests, to test the bounded waits).
  using EngineFactory = std::function<absl::StatusOr<std::unique_ptr<BlockEngine>>(int fd)>;
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<BlockDevice>> CreateWithEngine(
      const BlockConfig& config, const EngineFactory& make_engine,
      base::MetricsRegistry& metrics, const Clock& clock);
  ~BlockDevice() override;

  // VirtioDevice.
  [[nodiscard]] std::uint32_t device_id() const override;
  [[nodiscard]] std::uint64_t offered_features() const override { return features_; }
  [[nodiscard]] std::span<const std::uint16_t> queue_max_sizes() const override {
    return std::span(&config_.queue_size, 1);
  }
  [[nodiscard]] std::string name() const override { return "block_" + config_.drive_id; }
  void ReadConfig(std::uint64_t offset, std::span<std::uint8_t> data) const override;
  [[nodiscard]] bool WriteConfig(std::uint64_t offset,
                                 std::span<const std::uint8_t> data) override;
  // Refused while requests from before the last reset are still in flight (a reset that
  // gave up waiting for them): the transport then sets DEVICE_NEEDS_RESET.
  [[nodiscard]] absl::Status Activate(ActivationContext context) override;
  // Waits, on the vCPU thread, for the requests still in flight (they would write guest
  // memory the driver reuses once status reads 0), at most in_flight_wait_limit. The vCPU
  // never enters the io_uring (its seccomp filter has no io_uring_enter): it reaps the
  // completion queue's memory itself, and sleeps on a condition variable that the VMM
  // thread's ProcessCompletions also signals.
  void Reset() override;
  void ProcessQueue(std::size_t index) override;
  // The engine's completion eventfd (io_uring only; edge-triggered, never drained), the
  // rate limiter's timerfd and the resume eventfd of a pass that stopped at its bound.
  [[nodiscard]] std::vector<EventSource> EventSources() override;
  // Waits for every request in the engine, stale ones from before a reset included (they
  // still write guest memory), and answers the current ones. VMM loop thread. Gives up with
  // DEADLINE_EXCEEDED after in_flight_wait_limit.
  [[nodiscard]] absl::Status Quiesce() override;
  // The request queue's positions while activated. The configuration (path, engine, limits)
  // comes from the VM config, and after Quiesce no request is in flight.
  [[nodiscard]] std::vector<std::optional<QueuePositions>> SaveQueuePositions() const override;
  // The rate limiter's bucket levels, so a restored guest does not get a fresh burst.
  [[nodiscard]] DeviceState SaveDeviceState() const override;
  [[nodiscard]] absl::Status RestoreDeviceState(const DeviceState& state) override;

  // Loop thread: the engine's completion_fd is readable.
  void ProcessCompletions();
  // Loop thread: the rate limiter's timer fired; resumes a throttled queue.
  void ProcessRateLimiterTimer();
  // Loop thread: the resume eventfd fired; goes on with a queue whose last pass stopped at
  // its bound.
  void ProcessResume();
  // Loop thread (the control path posts it there): changes the limits while the VM runs.
  void UpdateRateLimiter(const std::optional<TokenBucketConfig>& bandwidth,
                         const std::optional<TokenBucketConfig>& ops);

  // Loop thread (the control path's drive swap): makes `file`, which the caller opened (the
  // VMM opens no drive file after boot: whoever asks for the swap passes it over the control
  // channel), the drive's backing file, known by `path` from now on. It must be open as the
  // first one was (read-write unless the drive is read-only, O_DIRECT exactly when
  // configured) and is checked as Create checks its file; then the requests in flight on the
  // old file are waited for (at most in_flight_wait_limit), the engine is pointed at the new
  // file, the capacity in the configuration space becomes the new file's, and an activated
  // device raises the
  // configuration-change interrupt (which bumps ConfigGeneration). Requests still queued run
  // on the new file. Errors: InvalidArgument for the new file's faults (as Create),
  // DEADLINE_EXCEEDED when the old file's requests did not finish; the old file then stays.
  [[nodiscard]] absl::Status ReplaceFile(const std::string& path, base::UniqueFd file);

  [[nodiscard]] std::uint64_t capacity_bytes() const {
    std::lock_guard lock(mu_);
    return capacity_bytes_;
  }
  // Whether `fd` (borrowed) is this drive's backing file (the same inode). Any thread.
  [[nodiscard]] bool HoldsFile(int fd) const;
  // The backing file's path: the configured one, or the last ReplaceFile's.
  [[nodiscard]] std::string path() const {
    std::lock_guard lock(mu_);
    return path_;
  }

 private:
  // Where one request in flight in the engine will be answered. Indexed by descriptor head,
  // which is also the engine cookie: a head has at most one request in flight.
  struct InFlight {
    bool busy = false;             // in the engine now
    std::uint64_t generation = 0;  // activation it belongs to; stale after a reset
    std::uint16_t head = 0;
    std::uint8_t* status = nullptr;
    std::uint32_t used_len = 0;  // bytes written into the chain on success, status included
    std::int64_t expected = 0;   // the engine result that means success
    std::uint32_t type = 0;
    std::uint64_t bytes = 0;  // data bytes, for metrics
    IoVecs iovs;              // kept alive until the engine has finished with them
  };

  struct Metrics {
    Metrics(base::MetricsRegistry& registry, const std::string& group);
    base::Metric* queue_events;
    base::Metric* read_count;
    base::Metric* read_bytes;
    base::Metric* write_count;
    base::Metric* write_bytes;
    base::Metric* flush_count;
    base::Metric* discard_count;
    base::Metric* write_zeroes_count;
    base::Metric* io_errors;
    base::Metric* invalid_requests;  // answered with IOERR/UNSUPP without touching the file
    base::Metric* invalid_chains;    // the driver broke the virtqueue: NEEDS_RESET
    base::Metric* rate_limiter_throttled;
    base::Metric* file_swaps;  // ReplaceFile calls that took effect
  };

  BlockDevice(const BlockConfig& config, base::UniqueFd file, std::uint64_t capacity_bytes,
              std::unique_ptr<BlockEngine> engine, RateLimiter limiter, base::EventFd resume,
              base::MetricsRegistry& metrics);

  // All of these run with mu_ held.
  void DrainQueue();
  // Starts (or answers) one request; false when the rate limiter says wait.
  [[nodiscard]] bool StartRequest(const DescriptorChain& chain);
  void Answer(std::uint16_t head, std::uint8_t* status, std::uint8_t value,
              std::uint32_t used_len);
  void StartIo(const DescriptorChain& chain, const Request& request);
  [[nodiscard]] std::uint8_t CheckRange(std::uint64_t sector, std::uint64_t bytes) const;
  // Takes what the engine has finished; no system call (see Reset).
  void ReapCompletions();
  // Whether the engine holds a request of descriptor head `head`.
  [[nodiscard]] bool HeadInFlight(std::uint16_t head) const;
  // Quiesce's wait on the VMM thread: submits what is queued and reaps until the engine
  // holds no request, stale ones included, waiting in the engine.
  [[nodiscard]] absl::Status WaitForInFlight();
  // Reset's wait on a vCPU thread, which must not enter the engine: true once nothing is
  // in flight, false at the limit. `lock` holds mu_ (released while it sleeps).
  [[nodiscard]] bool WaitForInFlightWithoutEntering(std::unique_lock<std::mutex>& lock);
  void InterruptIfNeeded();
  void MarkBroken(const absl::Status& why);

  const BlockConfig config_;
  const std::uint64_t features_;
  Metrics metrics_;

  mutable std::mutex config_mu_;
  std::vector<std::uint8_t> config_space_;  // guarded by config_mu_

  mutable std::mutex mu_;
  base::UniqueFd file_;  // guarded by mu_; declared before engine_: the engine borrows it
  std::string path_;     // guarded by mu_; file_'s
  std::uint64_t capacity_bytes_;  // guarded by mu_
  std::unique_ptr<BlockEngine> engine_;           // guarded by mu_
  RateLimiter limiter_;                           // guarded by mu_
  std::optional<Queue> queue_;                    // guarded by mu_; set while activated
  DeviceSignals* signals_ = nullptr;              // guarded by mu_
  bool broken_ = false;                           // guarded by mu_
  bool used_added_ = false;                       // guarded by mu_
  std::uint64_t generation_ = 0;                  // guarded by mu_
  // Guarded by mu_. One slot per descriptor head, allocated on the head's first request and
  // kept at its address (the engine holds pointers to its iovecs); indexing is one load,
  // where a deque of these 192-byte records took a division per access.
  std::vector<std::unique_ptr<InFlight>> in_flight_;
  std::size_t in_flight_count_ = 0;               // guarded by mu_; busy slots, stale included
  bool resetting_ = false;                        // guarded by mu_; a Reset waits on drained_
  std::condition_variable drained_;               // signalled when a reap empties the engine
  std::vector<Completion> completions_;           // guarded by mu_; reused buffer
  DescriptorChain chain_;                         // guarded by mu_; reused by DrainQueue
  // Signalled when a pass stops at its bound with more available; the loop then comes back
  // through ProcessResume after serving what else is ready.
  const base::EventFd resume_;
};

}  // namespace ember::virtio::block
