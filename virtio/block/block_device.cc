#include "virtio/block/block_device.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "virtio/block/io_uring_engine.h"
#include "virtio/block/sync_engine.h"
#include "virtio/spec.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"

namespace ember::virtio::block {
namespace {

// Feature bits (spec 5.2.3).
constexpr unsigned kFeatureSegMax = 2;
constexpr unsigned kFeatureRo = 5;
constexpr unsigned kFeatureBlkSize = 6;
constexpr unsigned kFeatureFlush = 9;
constexpr unsigned kFeatureDiscard = 13;
constexpr unsigned kFeatureWriteZeroes = 14;

// Up to this many sectors per discard / write-zeroes segment (2 GiB); one segment each.
constexpr std::uint32_t kMaxZeroingSectors = 0x400000;

// struct virtio_blk_config (spec 5.2.4), up to write_zeroes_may_unmap.
struct ConfigSpace {
  std::uint64_t capacity;
  std::uint32_t size_max;
  std::uint32_t seg_max;
  std::uint16_t cylinders;
  std::uint8_t heads;
  std::uint8_t sectors;
  std::uint32_t blk_size;
  std::uint8_t physical_block_exp;
  std::uint8_t alignment_offset;
  std::uint16_t min_io_size;
  std::uint32_t opt_io_size;
  std::uint8_t writeback;
  std::uint8_t unused0;
  std::uint16_t num_queues;
  std::uint32_t max_discard_sectors;
  std::uint32_t max_discard_seg;
  std::uint32_t discard_sector_alignment;
  std::uint32_t max_write_zeroes_sectors;
  std::uint32_t max_write_zeroes_seg;
  std::uint8_t write_zeroes_may_unmap;
  std::uint8_t unused1[3];
};
static_assert(offsetof(ConfigSpace, seg_max) == 12);
static_assert(offsetof(ConfigSpace, blk_size) == 20);
static_assert(offsetof(ConfigSpace, num_queues) == 34);
static_assert(offsetof(ConfigSpace, max_discard_sectors) == 36);
static_assert(offsetof(ConfigSpace, max_write_zeroes_seg) == 52);
// The struct pads to 64 bytes; the device exposes the spec's 60.
constexpr std::size_t kConfigSpaceSize = offsetof(ConfigSpace, unused1) + 3;
static_assert(kConfigSpaceSize == 60);

std::vector<std::uint8_t> MakeConfigSpace(std::uint64_t capacity_bytes,
                                          std::uint16_t queue_size) {
  ConfigSpace c{};
  c.capacity = capacity_bytes / kSectorSize;
  c.seg_max = queue_size - 2u;  // a chain also carries the header and the status byte
  c.blk_size = kSectorSize;
  c.num_queues = 1;
  c.max_discard_sectors = kMaxZeroingSectors;
  c.max_discard_seg = 1;
  c.discard_sector_alignment = 1;
  c.max_write_zeroes_sectors = kMaxZeroingSectors;
  c.max_write_zeroes_seg = 1;
  c.write_zeroes_may_unmap = 1;
  std::vector<std::uint8_t> bytes(kConfigSpaceSize);
  std::memcpy(bytes.data(), &c, kConfigSpaceSize);
  return bytes;
}

std::uint64_t Features(const BlockConfig& config) {
  std::uint64_t features = FeatureBit(kFeatureVersion1) | FeatureBit(kFeatureIndirectDesc) |
                           FeatureBit(kFeatureEventIdx) | FeatureBit(kFeatureSegMax) |
                           FeatureBit(kFeatureBlkSize);
  if (config.read_only) {
    features |= FeatureBit(kFeatureRo);
  } else {
    features |= FeatureBit(kFeatureDiscard) | FeatureBit(kFeatureWriteZeroes);
  }
  if (config.cache == CacheMode::kWriteback) features |= FeatureBit(kFeatureFlush);
  return features;
}

absl::StatusOr<std::uint64_t> BackingSize(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return base::ErrnoError("fstat", path);
  std::uint64_t size = 0;
  if (S_ISREG(st.st_mode)) {
    size = static_cast<std::uint64_t>(st.st_size);
  } else if (S_ISBLK(st.st_mode)) {
    // lseek rather than BLKGETSIZE64: a drive swap sizes its file on the VMM thread, whose
    // seccomp filter allows lseek but no block-device ioctl.
    off_t end = ::lseek(fd, 0, SEEK_END);
    if (end < 0) return base::ErrnoError("lseek", path);
    size = static_cast<std::uint64_t>(end);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("drive file ", path, " is neither a regular file nor a block device"));
  }
  if (size % kSectorSize != 0) {
    return absl::InvalidArgumentError(absl::StrCat("drive file ", path, " is ", size,
                                                   " bytes, not a multiple of 512"));
  }
  return size;
}

// Opens `path` as `config`'s drive: read-only drives O_RDONLY, O_DIRECT when asked.
absl::StatusOr<base::UniqueFd> OpenBackingFile(const BlockConfig& config,
                                               const std::string& path) {
  const int flags = O_CLOEXEC | (config.read_only ? O_RDONLY : O_RDWR) |
                    (config.direct_io ? O_DIRECT : 0);
  base::UniqueFd file(::open(path.c_str(), flags));
  if (!file) {
    // Whatever the errno (no such file, no permission, O_DIRECT unsupported there), the file
    // is the configurer's choice.
    return absl::InvalidArgumentError(
        base::ErrnoError("open", absl::StrCat("drive ", config.drive_id, " (", path, ")"))
            .message());
  }
  return file;
}

}  // namespace

BlockDevice::Metrics::Metrics(base::MetricsRegistry& registry, const std::string& group)
    : queue_events(registry.Get(group, "queue_events")),
      read_count(registry.Get(group, "read_count")),
      read_bytes(registry.Get(group, "read_bytes")),
      write_count(registry.Get(group, "write_count")),
      write_bytes(registry.Get(group, "write_bytes")),
      flush_count(registry.Get(group, "flush_count")),
      discard_count(registry.Get(group, "discard_count")),
      write_zeroes_count(registry.Get(group, "write_zeroes_count")),
      io_errors(registry.Get(group, "io_errors")),
      invalid_requests(registry.Get(group, "invalid_requests")),
      invalid_chains(registry.Get(group, "invalid_chains")),
      rate_limiter_throttled(registry.Get(group, "rate_limiter_throttled")),
      file_swaps(registry.Get(group, "file_swaps")) {}

absl::StatusOr<std::unique_ptr<BlockDevice>> BlockDevice::Create(const BlockConfig& config,
                                                                 base::MetricsRegistry& metrics,
                                                                 const Clock& clock) {
  return CreateWithEngine(
      config,
      [&config](int fd) -> absl::StatusOr<std::unique_ptr<BlockEngine>> {
        if (config.engine == EngineKind::kIoUring) {
          EMBER_ASSIGN_OR_RETURN(std::unique_ptr<IoUringEngine> engine,
                                 IoUringEngine::Create(fd, config.queue_size));
          return engine;
        }
        return std::make_unique<SyncEngine>(fd);
      },
      metrics, clock);
}

absl::StatusOr<std::unique_ptr<BlockDevice>> BlockDevice::CreateWithEngine(
    const BlockConfig& config, const EngineFactory& make_engine, base::MetricsRegistry& metrics,
    const Clock& clock) {
  if (config.queue_size < 4 || config.queue_size > kMaxQueueSize ||
      (config.queue_size & (config.queue_size - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("drive ", config.drive_id, ": queue size ",
                                                   config.queue_size,
                                                   " is not a power of two in [4, 32768]"));
  }
  EMBER_ASSIGN_OR_RETURN(base::UniqueFd file, OpenBackingFile(config, config.path));
  EMBER_ASSIGN_OR_RETURN(std::uint64_t capacity, BackingSize(file.Get(), config.path));
  EMBER_ASSIGN_OR_RETURN(std::unique_ptr<BlockEngine> engine, make_engine(file.Get()));
  EMBER_ASSIGN_OR_RETURN(RateLimiter limiter, RateLimiter::Create(config.rate_limiter, clock));
  EMBER_ASSIGN_OR_RETURN(base::EventFd resume, base::EventFd::Create());
  return std::unique_ptr<BlockDevice>(new BlockDevice(config, std::move(file), capacity,
                                                      std::move(engine), std::move(limiter),
                                                      std::move(resume), metrics));
}

BlockDevice::BlockDevice(const BlockConfig& config, base::UniqueFd file,
                         std::uint64_t capacity_bytes, std::unique_ptr<BlockEngine> engine,
                         RateLimiter limiter, base::EventFd resume, base::MetricsRegistry& metrics)
    : config_(config),
      features_(Features(config)),
      metrics_(metrics, "block_" + config.drive_id),
      config_space_(MakeConfigSpace(capacity_bytes, config.queue_size)),
      file_(std::move(file)),
      path_(config.path),
      capacity_bytes_(capacity_bytes),
      engine_(std::move(engine)),
      limiter_(std::move(limiter)),
      in_flight_(config.queue_size),
      resume_(std::move(resume)) {}

BlockDevice::~BlockDevice() = default;

std::uint32_t BlockDevice::device_id() const { return kDeviceIdBlock; }

void BlockDevice::ReadConfig(std::uint64_t offset, std::span<std::uint8_t> data) const {
  std::lock_guard lock(config_mu_);
  for (std::size_t i = 0; i < data.size(); ++i) {
    data[i] = offset + i < config_space_.size() ? config_space_[offset + i] : 0;
  }
}

bool BlockDevice::WriteConfig(std::uint64_t, std::span<const std::uint8_t>) {
  // Nothing is writable: writeback toggling (VIRTIO_BLK_F_CONFIG_WCE) is not offered.
  return false;
}

bool BlockDevice::HoldsFile(int fd) const {
  struct stat ours {};
  struct stat theirs {};
  std::lock_guard lock(mu_);
  return ::fstat(file_.Get(), &ours) == 0 && ::fstat(fd, &theirs) == 0 &&
         ours.st_dev == theirs.st_dev && ours.st_ino == theirs.st_ino;
}

absl::Status BlockDevice::ReplaceFile(const std::string& path, base::UniqueFd file) {
  // Everything that can fail on the new file happens before the old one is touched.
  const int flags = ::fcntl(file.Get(), F_GETFL);
  if (flags < 0) return base::ErrnoError("fcntl(F_GETFL)", "drive " + config_.drive_id);
  const int access = flags & O_ACCMODE;
  if ((config_.read_only ? access == O_WRONLY : access != O_RDWR) ||
      config_.direct_io != ((flags & O_DIRECT) != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "drive ", config_.drive_id, ": the new file (", path, ") must be open ",
        config_.read_only ? "for reading" : "for reading and writing",
        config_.direct_io ? ", with O_DIRECT" : ", without O_DIRECT", ", as the drive is"));
  }
  EMBER_ASSIGN_OR_RETURN(std::uint64_t capacity, BackingSize(file.Get(), path));
  std::lock_guard lock(mu_);
  // A request in flight was checked against the old file's size and must land in it; the
  // engine's file slot may change only once none is left.
  EMBER_RETURN_IF_ERROR(WaitForInFlight());
  EMBER_RETURN_IF_ERROR(engine_->ReplaceFile(file.Get()));
  file_ = std::move(file);  // closes the old file, which no operation uses any more
  path_ = path;
  capacity_bytes_ = capacity;
  {
    std::lock_guard config_lock(config_mu_);
    config_space_ = MakeConfigSpace(capacity, config_.queue_size);
  }
  metrics_.file_swaps->Add();
  // A driver reads the new capacity on the configuration-change interrupt (Linux's
  // virtblk_config_changed resizes the disk); one that is not running reads it at probe.
  if (signals_ != nullptr) signals_->SignalConfigChange();
  EMBER_LOG(kInfo) << name() << ": backing file is now " << path << " (" << capacity
                   << " bytes)";
  return absl::OkStatus();
}

absl::Status BlockDevice::Activate(ActivationContext context) {
  if (context.queues.size() != 1 || !context.queues[0].has_value()) {
    return absl::FailedPreconditionError(name() + ": the driver did not enable the request queue");
  }
  std::lock_guard lock(mu_);
  ReapCompletions();
  if (in_flight_count_ > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(name(), ": ", in_flight_count_,
                     " requests from before the last reset are still in flight in the host"));
  }
  queue_ = std::move(context.queues[0]);
  signals_ = context.signals;
  broken_ = false;
  used_added_ = false;
  return absl::OkStatus();
}

void BlockDevice::Reset() {
  std::unique_lock lock(mu_);
  // Requests still in the engine are orphaned (never reported) and waited for: once the
  // driver reads status 0 it may reuse their buffers, and a late read landing in one would
  // corrupt the re-initialised guest (spec 2.4: after a reset the device leaves the queues'
  // memory alone). This blocks the writing vCPU for the time the host takes to finish them,
  // as QEMU's virtio-blk does, but not for ever: past the limit the reset completes, and the
  // device refuses to start again (NEEDS_RESET) until they have finished.
  ++generation_;
  queue_.reset();
  signals_ = nullptr;
  broken_ = false;
  if (!WaitForInFlightWithoutEntering(lock)) {
    EMBER_LOG(kError) << name() << ": reset gave up after "
                      << config_.in_flight_wait_limit.count() << " ms with " << in_flight_count_
                      << " requests still in flight in the host; the device stays stopped "
                         "until they finish";
  }
}

bool BlockDevice::WaitForInFlightWithoutEntering(std::unique_lock<std::mutex>& lock) {
  // Completions normally come from the VMM thread (ProcessCompletions signals drained_); the
  // vCPU also looks at the completion queue itself every kPeek, since that thread may be
  // busy or waiting for this very vCPU to pause. The kernel posts completions whoever waits.
  constexpr auto kPeek = std::chrono::milliseconds(1);
  const auto deadline = std::chrono::steady_clock::now() + config_.in_flight_wait_limit;
  resetting_ = true;
  for (;;) {
    ReapCompletions();
    if (in_flight_count_ == 0) break;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) break;
    drained_.wait_until(lock, std::min(now + kPeek, deadline));
  }
  resetting_ = false;
  return in_flight_count_ == 0;
}

std::vector<EventSource> BlockDevice::EventSources() {
  std::vector<EventSource> sources;
  if (engine_->completion_fd() >= 0) {
    sources.push_back({engine_->completion_fd(), [this] { ProcessCompletions(); },
                       /*edge_triggered=*/true});
  }
  sources.push_back({limiter_.timer_fd(), [this] { ProcessRateLimiterTimer(); }});
  sources.push_back({resume_.Get(), [this] { ProcessResume(); }});
  return sources;
}

absl::Status BlockDevice::Quiesce() {
  std::lock_guard lock(mu_);
  return WaitForInFlight();
}

absl::Status BlockDevice::WaitForInFlight() {
  const auto deadline = std::chrono::steady_clock::now() + config_.in_flight_wait_limit;
  engine_->Submit();
  ReapCompletions();
  while (in_flight_count_ > 0) {
    const auto left = deadline - std::chrono::steady_clock::now();
    absl::Status waited = left > left.zero() ? engine_->WaitForCompletion(left)
                                             : absl::DeadlineExceededError("no time left");
    if (absl::IsDeadlineExceeded(waited)) {
      return absl::DeadlineExceededError(absl::StrCat(
          name(), ": ", in_flight_count_, " requests still in flight in the host after ",
          config_.in_flight_wait_limit.count(), " ms"));
    }
    EMBER_RETURN_IF_ERROR(waited);
    ReapCompletions();
  }
  return absl::OkStatus();
}

std::vector<std::optional<QueuePositions>> BlockDevice::SaveQueuePositions() const {
  std::lock_guard lock(mu_);
  if (!queue_) return {};
  return {QueuePositions{queue_->next_avail(), queue_->next_used()}};
}

DeviceState BlockDevice::SaveDeviceState() const {
  std::lock_guard lock(mu_);
  return BlockState{limiter_.SaveState()};
}

absl::Status BlockDevice::RestoreDeviceState(const DeviceState& state) {
  EMBER_ASSIGN_OR_RETURN(BlockState saved, DeviceStateAs<BlockState>(state, name()));
  std::lock_guard lock(mu_);
  limiter_.RestoreState(saved.rate_limiter);
  return absl::OkStatus();
}

void BlockDevice::ProcessQueue(std::size_t) {
  std::lock_guard lock(mu_);
  metrics_.queue_events->Add();
  DrainQueue();
}

void BlockDevice::ProcessCompletions() {
  std::lock_guard lock(mu_);
  ReapCompletions();
}

void BlockDevice::ProcessRateLimiterTimer() {
  std::lock_guard lock(mu_);
  limiter_.OnTimer();
  DrainQueue();
}

void BlockDevice::ProcessResume() {
  resume_.Consume();
  std::lock_guard lock(mu_);
  DrainQueue();
}

void BlockDevice::UpdateRateLimiter(const std::optional<TokenBucketConfig>& bandwidth,
                                    const std::optional<TokenBucketConfig>& ops) {
  std::lock_guard lock(mu_);
  limiter_.Update(bandwidth, ops);
}

void BlockDevice::DrainQueue() {
  if (!queue_ || broken_) return;
  // A ring's worth per pass: a driver that keeps publishing (as fast as the device returns
  // heads) would otherwise hold the VMM thread for as long as it likes.
  std::size_t budget = queue_->size();
  bool throttled = false;
  do {
    queue_->DisableNotification();
    for (; budget > 0; --budget) {
      auto popped = queue_->Pop(&chain_);
      if (!popped.ok()) {
        MarkBroken(popped.status());
        break;
      }
      if (!*popped) break;
      if (HeadInFlight(chain_.head)) {
        // Its request was never returned: the driver broke the ring (spec 2.7.13), and
        // serving both would hand one head back twice. This is also what bounds the requests
        // in flight to the queue size.
        MarkBroken(absl::InvalidArgumentError(absl::StrCat(
            "descriptor head ", chain_.head, " made available again while still in flight")));
        break;
      }
      if (!StartRequest(chain_)) {
        // Retried when the rate limiter's timer fires; notifications stay off until then.
        queue_->UndoPop();
        throttled = true;
        break;
      }
      if (broken_) break;
    }
  } while (budget > 0 && !throttled && !broken_ && queue_->EnableNotification());
  engine_->Submit();
  ReapCompletions();
  // Notifications stay off, and the loop comes back once it has served the rest.
  if (budget == 0 && !broken_ && queue_) resume_.Signal();
}

std::uint8_t BlockDevice::CheckRange(std::uint64_t sector, std::uint64_t bytes) const {
  if (sector > capacity_bytes_ / kSectorSize) return kStatusIoErr;
  const std::uint64_t offset = sector * kSectorSize;
  return bytes <= capacity_bytes_ - offset ? kStatusOk : kStatusIoErr;
}

bool BlockDevice::StartRequest(const DescriptorChain& chain) {
  auto parsed = ParseRequest(chain);
  if (!parsed.ok()) {
    MarkBroken(parsed.status());
    return true;
  }
  const Request& request = *parsed;
  const bool data_transfer = request.type == kTypeIn || request.type == kTypeOut;
  if (!limiter_.ConsumeRequest(data_transfer ? request.data_len : 0)) {
    metrics_.rate_limiter_throttled->Add();
    return false;
  }
  auto reject = [&](std::uint8_t status) {
    metrics_.invalid_requests->Add();
    Answer(chain.head, request.status, status, 1);
    return true;
  };
  switch (request.type) {
    case kTypeIn:
    case kTypeOut:
      if (request.type == kTypeOut && config_.read_only) return reject(kStatusIoErr);
      if (request.data_len % kSectorSize != 0) return reject(kStatusIoErr);
      if (CheckRange(request.sector, request.data_len) != kStatusOk) return reject(kStatusIoErr);
      StartIo(chain, request);
      return true;
    case kTypeFlush:
      // Without FLUSH offered (cache=unsafe) there is nothing the guest may rely on.
      if (config_.cache != CacheMode::kWriteback) {
        Answer(chain.head, request.status, kStatusOk, 1);
        return true;
      }
      StartIo(chain, request);
      return true;
    case kTypeGetId: {
      std::array<std::uint8_t, kIdBytes> id{};
      std::memcpy(id.data(), config_.drive_id.data(),
                  std::min<std::size_t>(config_.drive_id.size(), kIdBytes));
      const auto len = static_cast<std::uint32_t>(std::min<std::uint64_t>(request.data_len, kIdBytes));
      if (!chain.CopyToWritable(0, std::span(id).first(len))) return reject(kStatusIoErr);
      Answer(chain.head, request.status, kStatusOk, len + 1);
      return true;
    }
    case kTypeDiscard:
    case kTypeWriteZeroes:
      if (config_.read_only) return reject(kStatusIoErr);
      StartIo(chain, request);
      return true;
    default:
      return reject(kStatusUnsupp);
  }
}

bool BlockDevice::HeadInFlight(std::uint16_t head) const {
  return in_flight_[head] != nullptr && in_flight_[head]->busy;
}

void BlockDevice::StartIo(const DescriptorChain& chain, const Request& request) {
  std::unique_ptr<InFlight>& slot = in_flight_[chain.head];
  if (!slot) slot = std::make_unique<InFlight>();
  slot->busy = true;
  ++in_flight_count_;
  const std::uint64_t cookie = chain.head;
  InFlight& op = *slot;
  op.generation = generation_;
  op.head = chain.head;
  op.status = request.status;
  op.type = request.type;
  op.bytes = 0;
  op.expected = 0;
  op.used_len = 1;
  auto abandon = [&](std::uint8_t status) {
    op.busy = false;
    --in_flight_count_;
    metrics_.invalid_requests->Add();
    Answer(chain.head, request.status, status, 1);
  };
  const std::uint64_t offset = request.sector * kSectorSize;
  switch (request.type) {
    case kTypeIn:
      if (!chain.WritableIoVecs(0, request.data_len, &op.iovs)) return abandon(kStatusIoErr);
      op.bytes = request.data_len;
      op.expected = static_cast<std::int64_t>(request.data_len);
      op.used_len = static_cast<std::uint32_t>(request.data_len + 1);
      engine_->Read(offset, op.iovs, cookie);
      return;
    case kTypeOut:
      if (!chain.ReadableIoVecs(16, request.data_len, &op.iovs)) return abandon(kStatusIoErr);
      op.bytes = request.data_len;
      op.expected = static_cast<std::int64_t>(request.data_len);
      engine_->Write(offset, op.iovs, cookie);
      return;
    case kTypeFlush:
      engine_->Flush(cookie);
      return;
    default: {  // discard, write zeroes: exactly one segment (max_*_seg is 1)
      DiscardSegment segment{};
      if (request.data_len != sizeof(segment) ||
          !chain.CopyFromReadable(16, std::span(reinterpret_cast<std::uint8_t*>(&segment),
                                                sizeof(segment)))) {
        return abandon(kStatusIoErr);
      }
      const bool zeroes = request.type == kTypeWriteZeroes;
      const std::uint32_t allowed_flags = zeroes ? kWriteZeroesFlagUnmap : 0;
      if ((segment.flags & ~allowed_flags) != 0) return abandon(kStatusUnsupp);
      const std::uint64_t bytes = std::uint64_t{segment.num_sectors} * kSectorSize;
      if (segment.num_sectors > kMaxZeroingSectors ||
          CheckRange(segment.sector, bytes) != kStatusOk) {
        return abandon(kStatusIoErr);
      }
      op.bytes = bytes;
      engine_->WriteZeroes(segment.sector * kSectorSize, bytes,
                           !zeroes || (segment.flags & kWriteZeroesFlagUnmap) != 0, cookie);
      return;
    }
  }
}

void BlockDevice::Answer(std::uint16_t head, std::uint8_t* status, std::uint8_t value,
                         std::uint32_t used_len) {
  *status = value;
  queue_->AddUsed(head, used_len);
  used_added_ = true;
}

void BlockDevice::ReapCompletions() {
  completions_.clear();
  engine_->Reap(&completions_);
  // Counted here and added once per batch: each Metric::Add is a locked instruction.
  std::uint64_t reads = 0;
  std::uint64_t read_bytes = 0;
  std::uint64_t writes = 0;
  std::uint64_t write_bytes = 0;
  for (const Completion& done : completions_) {
    InFlight& op = *in_flight_[done.cookie];
    op.iovs.clear();
    op.busy = false;
    --in_flight_count_;
    if (op.generation != generation_ || !queue_) continue;  // the driver reset meanwhile
    const bool ok = done.result == op.expected;
    if (!ok) {
      metrics_.io_errors->Add();
      EMBER_LOG(kDebug) << name() << ": request type " << op.type << " failed: result "
                        << done.result << ", expected " << op.expected;
    } else if (op.type == kTypeIn) {
      ++reads;
      read_bytes += op.bytes;
    } else if (op.type == kTypeOut) {
      ++writes;
      write_bytes += op.bytes;
    } else if (op.type == kTypeFlush) {
      metrics_.flush_count->Add();
    } else if (op.type == kTypeDiscard) {
      metrics_.discard_count->Add();
    } else {
      metrics_.write_zeroes_count->Add();
    }
    Answer(op.head, op.status, ok ? kStatusOk : kStatusIoErr, ok ? op.used_len : 1);
  }
  if (reads > 0) {
    metrics_.read_count->Add(reads);
    metrics_.read_bytes->Add(read_bytes);
  }
  if (writes > 0) {
    metrics_.write_count->Add(writes);
    metrics_.write_bytes->Add(write_bytes);
  }
  if (resetting_ && in_flight_count_ == 0) drained_.notify_all();
  InterruptIfNeeded();
}

void BlockDevice::InterruptIfNeeded() {
  if (!used_added_ || !queue_) return;
  used_added_ = false;
  if (queue_->NeedsInterrupt() && signals_ != nullptr) signals_->SignalUsedBuffer();
}

void BlockDevice::MarkBroken(const absl::Status& why) {
  metrics_.invalid_chains->Add();
  EMBER_LOG(kWarn) << name() << ": driver error, device needs reset: " << why;
  broken_ = true;
  if (signals_ != nullptr) signals_->MarkNeedsReset();
}

}  // namespace ember::virtio::block
