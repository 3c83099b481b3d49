// Measures virtio-blk's data path from the host side (issue 4): the real BlockDevice behind
// the real MmioTransport, driven through guest-memory rings by the fake guest driver
// (virtio/testing), with a real base::EventLoop dispatching the queue's ioeventfd and the
// io_uring completion eventfd, as ember-vmm's VMM thread does. No guest CPU is involved: the
// "guest" is an interrupt handler run on the same thread after each round of the loop in
// which the device raised its interrupt (signalled the irqfd and set InterruptStatus); it
// acknowledges the interrupt, reaps used entries and posts new requests (EVENT_IDX on both
// sides, as Linux's virtio_blk negotiates it).
//
// The device's figure is what the VMM's loop thread serves: requests completed per second of
// the thread's own time, the sample's time less what the fake guest spent posting its first
// requests and in its handler (every call timed, on device_bench.h's SampleClock as the net and
// vsock benches time theirs). In a VM that work, the kick included, runs on the guest's vCPU
// thread, not the VMM's. The same samples by the wall clock, guest work included, are printed
// as a second line (_with_guest), so the guest's cost stays in view.
//
// The baseline is a plain liburing loop doing the same operations at the same queue depth on
// the same file in the same run: what the host kernel gives without a VMM. Samples of the
// three variants are interleaved, each figure the median. Prints figures only; never asserts.
#include <fcntl.h>
#include <liburing.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "perf/bench_options.h"
#include "perf/bench_report.h"
#include "perf/device_bench.h"
#include "virtio/block/block_device.h"
#include "virtio/block/request.h"
#include "virtio/mmio/mmio_transport.h"
#include "virtio/mmio/registers.h"
#include "virtio/spec.h"
#include "virtio/testing/fake_block_driver.h"
#include "virtio/testing/fake_driver_queue.h"
#include "virtio/testing/fake_mmio_driver.h"
#include "vmm/base/event_fd.h"
#include "vmm/base/event_loop.h"
#include "vmm/base/guest_memory.h"
#include "vmm/base/metrics.h"
#include "vmm/base/mmap_region.h"
#include "vmm/base/unique_fd.h"

namespace ember::perf {
namespace {

using virtio::block::BlockConfig;
using virtio::block::BlockDevice;
using virtio::block::EngineKind;
using Clock = std::chrono::steady_clock;

constexpr char kUsage[] =
    "usage: ember-blk-bench --dir DIR [--size-mib N] [--runs N] [--seconds S] [--only NAME]\n"
    "                       [--verbose]\n"
    "\n"
    "  --dir DIR      where the disk images live (created once, reused); a real file system,\n"
    "                 not tmpfs, or the O_DIRECT figures are skipped\n"
    "  --size-mib N   size of each disk image (default 256)\n"
    "  --runs N       samples per figure (default 5); each figure is the median\n"
    "  --seconds S    length of one sample (default 0.4)\n"
    "  --only NAME    measure only the figures whose name contains NAME\n"
    "  --verbose      print every sample to stderr\n";

constexpr std::uint64_t kGuestMemory = 32 << 20;
constexpr base::GuestAddress kQueueBase = 0x1000;
constexpr base::GuestAddress kBuffersBase = 0x10000;
constexpr std::uint16_t kQueueSize = 256;
// What Linux's virtio_blk accepts of what Ember offers, as far as the data path is concerned.
constexpr std::uint64_t kDriverFeatures =
    virtio::FeatureBit(virtio::kFeatureVersion1) | virtio::FeatureBit(virtio::kFeatureEventIdx);
constexpr auto kStallTimeout = std::chrono::seconds(5);

constexpr char kHarness[] = "ember-blk-bench";

[[noreturn]] void Fail(const std::string& message) { Die(kHarness, message); }

struct Options {
  std::string dir;
  std::string only;  // empty: every figure
  std::uint64_t size_mib = 256;
  int runs = 5;
  double seconds = 0.4;
  bool verbose = false;
};

Options ParseOptions(int argc, char** argv) {
  Options options;
  BenchOptions(kHarness, kUsage)
      .Text("--dir", &options.dir, /*required=*/true)
      .Text("--only", &options.only)
      .Number("--size-mib", &options.size_mib, std::uint64_t{16})
      .Number("--runs", &options.runs, 1)
      .Number("--seconds", &options.seconds, kMinSampleSeconds)
      .Flag("--verbose", &options.verbose)
      .Parse(argc, argv);
  return options;
}

// What one figure does: every request moves `block` bytes; `depth` of them are kept in flight.
struct Workload {
  std::string name;  // figure name without the file suffix
  std::string unit;  // "IOPS" or "MiB/s"
  bool write = false;
  bool random = false;
  std::uint32_t block = 0;
  unsigned depth = 0;
};

// One disk image and how it is opened.
struct Disk {
  std::string path;
  bool direct = false;
  std::string suffix;  // "_pagecache" or "_direct"
  std::uint64_t size = 0;
};

// The offsets a workload visits, the same sequence for every variant: uniformly random
// block-aligned offsets from a fixed seed, or the file front to back, wrapping around.
class Offsets {
 public:
  Offsets(const Workload& workload, std::uint64_t file_size)
      : block_(workload.block), blocks_(file_size / workload.block) {
    if (!workload.random) return;
    std::mt19937_64 random(42);
    std::uniform_int_distribution<std::uint64_t> pick(0, blocks_ - 1);
    table_.resize(1 << 16);
    for (std::uint64_t& entry : table_) entry = pick(random);
  }
  std::uint64_t Next() {
    const std::uint64_t index = table_.empty() ? next_ % blocks_ : table_[next_ % table_.size()];
    ++next_;
    return index * block_;
  }

 private:
  std::uint64_t block_;
  std::uint64_t blocks_;
  std::vector<std::uint64_t> table_;
  std::uint64_t next_ = 0;
};

// The guest side of one sample: keeps `depth` requests in flight until the deadline, in
// Linux virtio_blk's order (acknowledge the interrupt, reap used entries, re-arm used_event,
// post new requests, kick only when avail_event asks for it). The kick is what KVM does when
// the guest's QueueNotify write hits the ioeventfd: the eventfd is signalled.
class BenchGuest {
 public:
  BenchGuest(const base::GuestMemory& memory, virtio::MmioTransport& transport,
             const Workload& workload, std::uint64_t file_size)
      : transport_(&transport),
        mmio_(transport),
        queue_(memory, kQueueBase, kQueueSize),
        alloc_(kBuffersBase, kGuestMemory - kBuffersBase),
        blk_(memory, queue_, alloc_),
        workload_(workload),
        offsets_(workload, file_size),
        slot_of_head_(kQueueSize, -1) {
    const std::vector<std::uint8_t> pattern(workload.block, 0xa5);
    // Laid out as Linux's virtio_blk lays out its requests: each one's header and status
    // byte together in its blk-mq payload (struct virtblk_req), the payloads packed in one
    // array, and the data in page-aligned buffers of their own.
    constexpr std::uint64_t kPayload = 32;  // header (16 bytes), status, padding
    const base::GuestAddress payloads = alloc_.Alloc(kPayload * workload.depth, 64);
    const base::GuestAddress data =
        alloc_.Alloc(std::uint64_t{workload.block} * workload.depth, 4096);
    for (unsigned i = 0; i < workload.depth; ++i) {
      const base::GuestAddress payload = payloads + kPayload * i;
      buffers_.push_back({payload, data + std::uint64_t{workload.block} * i, workload.block,
                          payload + 16});
      // Touches the data pages now, not during the sample (and gives writes their data).
      blk_.WriteData(buffers_.back(), pattern);
      free_slots_.push_back(static_cast<int>(i));
    }
  }

  [[nodiscard]] const virtio::QueueLayout& layout() const { return queue_.layout(); }
  [[nodiscard]] std::uint64_t completed() const { return completed_; }
  [[nodiscard]] bool done() const { return stopping_ && in_flight_ == 0; }

  void Start(Clock::time_point deadline) {
    deadline_ = deadline;
    Post();
  }

  // The guest's interrupt handler (vm_interrupt + virtblk_done), run after every round of
  // the loop; false, having done nothing, when the device raised no interrupt (its
  // InterruptStatus is clear). The device still signals the irqfd, but KVM delivers that to
  // the vCPU in the kernel: a guest never reads it, and waiting for it in the loop's epoll
  // set would add a system call per batch that ember-vmm's thread does not make.
  bool OnInterrupt() {
    const std::uint32_t status = mmio_.Read32(virtio::mmio::kInterruptStatus);
    if (status == 0) return false;
    mmio_.Write32(virtio::mmio::kInterruptAck, status);
    while (auto used = queue_.PopUsed()) {
      const int slot = slot_of_head_[used->id];
      if (slot < 0) Fail("the device returned head " + std::to_string(used->id) + " twice");
      slot_of_head_[used->id] = -1;
      if (std::uint8_t s = blk_.Status(buffers_[static_cast<std::size_t>(slot)]);
          s != virtio::block::kStatusOk) {
        Fail("a request failed with virtio-blk status " + std::to_string(s));
      }
      free_slots_.push_back(slot);
      --in_flight_;
      ++completed_;
    }
    // virtqueue_enable_cb: interrupt on the next used entry. (Linux then re-checks the used
    // ring for entries added meanwhile; here the device runs on this thread and cannot.)
    queue_.SetUsedEvent(queue_.UsedIdx());
    if (Clock::now() >= deadline_) stopping_ = true;
    if (!stopping_) Post();
    return true;
  }

 private:
  void Post() {
    while (!free_slots_.empty()) {
      const int slot = free_slots_.back();
      free_slots_.pop_back();
      const std::uint64_t sector = offsets_.Next() / 512;
      const std::uint16_t head =
          blk_.Add(buffers_[static_cast<std::size_t>(slot)],
                   workload_.write ? virtio::block::kTypeOut : virtio::block::kTypeIn, sector);
      slot_of_head_[head] = slot;
      ++in_flight_;
    }
    // virtqueue_kick_prepare: vring_need_event(avail_event, new, old).
    const std::uint16_t now = queue_.AvailIdx();
    const std::uint16_t event = queue_.AvailEvent();
    const bool kick = static_cast<std::uint16_t>(now - event - 1) <
                      static_cast<std::uint16_t>(now - prepared_avail_);
    prepared_avail_ = now;
    if (kick) transport_->queue_event(0).Signal();
  }

  virtio::MmioTransport* transport_;
  virtio::testing::FakeMmioDriver mmio_;
  virtio::testing::FakeDriverQueue queue_;
  virtio::testing::FakeGuestAllocator alloc_;
  virtio::testing::FakeBlockDriver blk_;
  Workload workload_;
  Offsets offsets_;
  std::vector<virtio::testing::BlockRequestBuffers> buffers_;
  std::vector<int> free_slots_;
  std::vector<int> slot_of_head_;  // -1: not in flight
  Clock::time_point deadline_{};
  std::uint16_t prepared_avail_ = 0;
  unsigned in_flight_ = 0;
  std::uint64_t completed_ = 0;
  bool stopping_ = false;
};

template <typename T>
T Check(absl::StatusOr<T> value, const std::string& what) {
  return CheckOk(kHarness, std::move(value), what);
}

void Check(const absl::Status& status, const std::string& what) { CheckOk(kHarness, status, what); }

// One sample through Ember's device on `engine`, in operations per second.
DeviceRate RunDevice(const Disk& disk, EngineKind engine, const Workload& workload, double seconds) {
  base::MetricsRegistry metrics;  // the sample's own, so runs do not add up
  base::GuestMemory memory = Check(base::GuestMemory::Create({{0, kGuestMemory}}), "guest memory");
  BlockConfig config;
  config.drive_id = "bench";
  config.path = disk.path;
  config.engine = engine;
  config.direct_io = disk.direct;
  config.queue_size = kQueueSize;
  std::unique_ptr<BlockDevice> device = Check(BlockDevice::Create(config, metrics), disk.path);
  std::unique_ptr<virtio::MmioTransport> transport =
      Check(virtio::MmioTransport::Create(memory, std::move(device),
                                          Check(base::EventFd::Create(), "irqfd"), metrics),
            "transport");
  BenchGuest guest(memory, *transport, workload, disk.size);
  virtio::testing::FakeMmioDriver probe(*transport);
  Check(probe.Initialize(kDriverFeatures & probe.DeviceFeatures(), {guest.layout()}), "probe");

  // Wired as VirtioDevices::Add wires a device into ember-vmm's loop.
  base::EventLoop loop = Check(base::EventLoop::Create(), "event loop");
  std::uint64_t events = 0;
  virtio::MmioTransport* t = transport.get();
  Check(loop.Add(t->queue_event(0).Get(), EPOLLIN | EPOLLET,
                 [t, &events](std::uint32_t) {
                   ++events;
                   t->ProcessQueueNotification(0);
                 }),
        "watch ioeventfd");
  for (virtio::EventSource& source : t->device().EventSources()) {
    Check(loop.Add(source.fd, EPOLLIN | (source.edge_triggered ? EPOLLET : 0u),
                   [on_readable = std::move(source.on_readable), &events](std::uint32_t) {
                     ++events;
                     on_readable();
                   }),
          "watch device fd");
  }

  SampleClock clock;
  const Clock::time_point deadline =
      clock.Start() +
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  clock.Guest([&] { guest.Start(deadline); });
  // RunOnce also returns without an event when io_uring's task work interrupts epoll_wait
  // (EINTR, common with O_DIRECT); only a long silence is a stall. The clock is read only
  // when a round brought no event, not once per round.
  bool silent = false;
  Clock::time_point silent_since{};
  std::uint64_t seen = 0;
  while (!guest.done()) {
    Check(loop.RunOnce(static_cast<int>(
              std::chrono::duration_cast<std::chrono::milliseconds>(kStallTimeout).count())),
          "event loop");
    clock.Guest([&] {
      if (guest.OnInterrupt()) ++events;
    });
    if (events != seen) {
      seen = events;
      silent = false;
    } else if (!silent) {
      silent = true;
      silent_since = Clock::now();
    } else if (Clock::now() - silent_since > kStallTimeout) {
      Fail("the device completed nothing for 5 s (" + workload.name + disk.suffix + ")");
    }
  }
  return clock.Rate(static_cast<double>(guest.completed()));
}

// One sample of the plain liburing loop, in operations per second (no guest: both rates are
// the wall clock's). The file is registered (IOSQE_FIXED_FILE) as Ember's engine registers it.
DeviceRate RunLiburing(const Disk& disk, const Workload& workload, double seconds) {
  const int flags = (workload.write ? O_RDWR : O_RDONLY) | O_CLOEXEC | (disk.direct ? O_DIRECT : 0);
  base::UniqueFd fd(::open(disk.path.c_str(), flags));
  if (!fd) Fail(ErrnoText("open " + disk.path));
  const std::size_t bytes = std::size_t{workload.block} * workload.depth;
  base::MmapRegion buffers = Check(
      base::MmapRegion::Map(bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS), "buffers");
  std::memset(buffers.data(), 0xa5, bytes);

  io_uring ring{};
  if (int err = io_uring_queue_init(workload.depth, &ring, 0); err < 0) {
    Fail("io_uring_queue_init: " + std::string(std::strerror(-err)));
  }
  const int file = fd.Get();
  if (int err = io_uring_register_files(&ring, &file, 1); err < 0) {
    Fail("io_uring_register_files: " + std::string(std::strerror(-err)));
  }
  Offsets offsets(workload, disk.size);
  auto queue = [&](unsigned slot) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (sqe == nullptr) Fail("io_uring: no free SQE at queue depth " + std::to_string(workload.depth));
    std::uint8_t* buffer = buffers.data() + std::size_t{slot} * workload.block;
    if (workload.write) {
      io_uring_prep_write(sqe, 0, buffer, workload.block, offsets.Next());
    } else {
      io_uring_prep_read(sqe, 0, buffer, workload.block, offsets.Next());
    }
    io_uring_sqe_set_flags(sqe, IOSQE_FIXED_FILE);
    io_uring_sqe_set_data64(sqe, slot);
  };

  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  for (unsigned slot = 0; slot < workload.depth; ++slot) queue(slot);
  unsigned in_flight = workload.depth;
  std::uint64_t completed = 0;
  bool stopping = false;
  while (in_flight > 0) {
    if (int err = io_uring_submit_and_wait(&ring, 1); err < 0 && err != -EINTR) {
      Fail("io_uring_submit_and_wait: " + std::string(std::strerror(-err)));
    }
    if (!stopping && Clock::now() >= deadline) stopping = true;
    unsigned seen = 0;
    unsigned head = 0;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++seen;
      if (cqe->res != static_cast<int>(workload.block)) {
        Fail("liburing " + workload.name + ": result " + std::to_string(cqe->res));
      }
      ++completed;
      if (stopping) {
        --in_flight;
      } else {
        queue(static_cast<unsigned>(io_uring_cqe_get_data64(cqe)));
      }
    }
    io_uring_cq_advance(&ring, seen);
  }
  const double elapsed = SecondsSince(start);
  io_uring_queue_exit(&ring);
  const double ops_per_second = static_cast<double>(completed) / elapsed;
  return {ops_per_second, ops_per_second, 0};
}

// Creates (or reuses) a fully written image of `size` bytes: no holes, so reads reach real
// blocks. Data is not zeros, in case the storage below compresses or deduplicates.
void PrepareImage(const std::string& path, std::uint64_t size) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && static_cast<std::uint64_t>(st.st_size) == size) return;
  std::fprintf(stderr, "ember-blk-bench: writing %s (%llu MiB, once)\n", path.c_str(),
               static_cast<unsigned long long>(size >> 20));
  const std::string tmp = path + ".tmp";
  base::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) Fail(ErrnoText("create " + tmp));
  std::vector<std::uint64_t> chunk((1 << 20) / sizeof(std::uint64_t));
  std::mt19937_64 random(7);
  for (std::uint64_t done = 0; done < size; done += 1 << 20) {
    for (std::uint64_t& word : chunk) word = random();
    if (::pwrite(fd.Get(), chunk.data(), 1 << 20, static_cast<off_t>(done)) != 1 << 20) {
      Fail(ErrnoText("write " + tmp));
    }
  }
  if (::fsync(fd.Get()) != 0) Fail(ErrnoText("fsync " + tmp));
  if (::rename(tmp.c_str(), path.c_str()) != 0) Fail(ErrnoText("rename " + tmp));
}

// Reads the whole file so the page-cache figures start from a warm cache.
void WarmPageCache(const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) Fail(ErrnoText("open " + path));
  std::vector<std::uint8_t> buffer(1 << 20);
  while (::read(fd.Get(), buffer.data(), buffer.size()) > 0) {
  }
}

// Drops the file's clean cached pages so the O_DIRECT figures do not share memory with it.
void DropPageCache(const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd) ::posix_fadvise(fd.Get(), 0, 0, POSIX_FADV_DONTNEED);
}

bool DirectIoWorks(const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT));
  return static_cast<bool>(fd);
}

// The three variants of one figure, sampled in turn (the order rotating between runs, so no
// variant always runs right after the same one), then printed as medians.
void MeasureFigure(const Disk& disk, const Workload& workload, const Options& options) {
  // IOPS or MiB/s from operations per second.
  const double scale =
      workload.unit == "IOPS" ? 1.0 : static_cast<double>(workload.block) / (1 << 20);
  const std::vector<std::function<DeviceRate()>> variants = {
      [&] { return RunDevice(disk, EngineKind::kIoUring, workload, options.seconds); },
      [&] { return RunLiburing(disk, workload, options.seconds); },
      [&] { return RunDevice(disk, EngineKind::kSync, workload, options.seconds); },
  };
  const char* const names[] = {"io_uring engine", "plain liburing", "sync engine"};
  // Untimed: first-use costs (io_uring set-up, page faults in the harness) stay out.
  for (const auto& variant : variants) (void)variant();
  std::vector<std::vector<double>> samples(variants.size());
  std::vector<double> uring_with_guest;  // io_uring engine samples by the wall clock
  std::vector<double> guest_share;       // io_uring engine samples
  for (int run = 0; run < options.runs; ++run) {
    for (std::size_t k = 0; k < variants.size(); ++k) {
      const std::size_t v = (k + static_cast<std::size_t>(run)) % variants.size();
      const DeviceRate sample = variants[v]();
      const double value = sample.per_second * scale;
      samples[v].push_back(value);
      if (v == 0) {
        uring_with_guest.push_back(sample.wall_per_second * scale);
        guest_share.push_back(sample.guest_share);
      }
      if (options.verbose) {
        std::fprintf(stderr, "run %d: %s%s %s: %.0f %s (%.0f with the guest's work)\n", run,
                     workload.name.c_str(), disk.suffix.c_str(), names[v], value,
                     workload.unit.c_str(), sample.wall_per_second * scale);
      }
    }
  }
  const std::string name = workload.name + disk.suffix;
  const std::string baseline = "liburing_" + workload.name.substr(4) + disk.suffix;
  const double uring = Median(samples[0]);
  const double plain = Median(samples[1]);
  PrintFigure(name, uring, workload.unit, baseline, plain);
  PrintFigure(name + "_sync", Median(samples[2]), workload.unit, baseline, plain);
  PrintFigure(name + "_with_guest", Median(uring_with_guest), workload.unit, baseline, plain);
  char note[320];
  std::snprintf(note, sizeof note,
                "target: %s >= 0.80 x %s: %s (ratio %.2f; the fake guest's own work, left out "
                "of the device's figures, took %.0f%% of the io_uring samples' time)",
                name.c_str(), baseline.c_str(), plain > 0 && uring >= 0.8 * plain ? "met" : "NOT met",
                plain > 0 ? uring / plain : 0.0, 100 * Median(guest_share));
  PrintNote(note);
}

int Main(int argc, char** argv) {
  const Options options = ParseOptions(argc, argv);
  if (::mkdir(options.dir.c_str(), 0755) != 0 && errno != EEXIST) {
    Fail(ErrnoText("mkdir " + options.dir));
  }
  const std::uint64_t size = options.size_mib << 20;
  const Workload workloads[] = {
      {"blk_randread_4k_qd32_iops", "IOPS", /*write=*/false, /*random=*/true, 4096, 32},
      {"blk_seqwrite_1m_mibs", "MiB/s", /*write=*/true, /*random=*/false, 1 << 20, 8},
  };
  std::vector<Disk> disks = {
      {options.dir + "/blk-bench-pagecache.img", false, "_pagecache", size},
      {options.dir + "/blk-bench-direct.img", true, "_direct", size},
  };
  for (const Disk& disk : disks) PrepareImage(disk.path, size);
  if (!DirectIoWorks(disks[1].path)) {
    std::fprintf(stderr,
                 "ember-blk-bench: %s's file system refuses O_DIRECT (tmpfs?); skipping the "
                 "_direct figures\n",
                 options.dir.c_str());
    disks.pop_back();
  } else {
    DropPageCache(disks[1].path);
  }
  WarmPageCache(disks[0].path);
  char note[200];
  std::snprintf(note, sizeof note,
                "block data path: %llu MiB files in %s; seqwrite at queue depth 8 with one 1 MiB "
                "data descriptor per request; samples of %.1f s, median of %d",
                static_cast<unsigned long long>(options.size_mib), options.dir.c_str(),
                options.seconds, options.runs);
  PrintNote(note);
  for (const Workload& workload : workloads) {
    for (const Disk& disk : disks) {
      if ((workload.name + disk.suffix).find(options.only) == std::string::npos) continue;
      MeasureFigure(disk, workload, options);
    }
  }
  return 0;
}

}  // namespace
}  // namespace ember::perf

int main(int argc, char** argv) { return ember::perf::Main(argc, argv); }
