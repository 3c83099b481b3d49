// Measures virtio-net's data path from the host side (issue 5) on a real tap: the real
// NetDevice behind the real MmioTransport, driven through guest-memory rings by the fake guest
// driver (virtio/testing), with a real base::EventLoop dispatching the queues' ioeventfds, the
// device's EventSet (the tap) and the irqfd, as ember-vmm's VMM thread does. No guest CPU: the
// "guest" is the irqfd handler on the same thread (EVENT_IDX and MRG_RXBUF, as Linux's
// virtio_net negotiates them).
//
// The device's figures are what the VMM's loop thread serves: frames per second of the
// thread's own time, the sample's time less what the fake guest spent in its own work. That
// work is its interrupt handler, timed around every call (taking the interrupt off the irqfd,
// acknowledging it, reaping used entries, reposting RX buffers, refilling the TX ring, the
// kicks), and the TX ring's first fill at the start of a TX sample; in a VM it runs on the
// guest's vCPU thread, not the VMM's. The host's side of the tap stays counted: the host stack
// taking each TX frame runs inside the device's write(). So does the loop's wake-up for the
// irqfd, which ember-vmm's loop does not watch. The same samples by the wall clock,
// the guest's work included, are printed as NAME_with_guest against the same baseline, and a
// note gives the guest's share of the samples' time.
//
// TX: the guest keeps the TX ring full of frames for a fixed time; the device writes each to
// the tap, where the host stack takes and discards it (a local-experimental ethertype to a
// MAC that is not the tap's). RX: the host's side of the tap is filled with a burst of frames
// (an AF_PACKET socket on the tap, queue length raised so none is dropped) before the sample's
// clock starts, then the time to move the whole burst into the guest's RX ring is measured.
// The guest's RX ring is full of buffers before then too (Linux fills it before DRIVER_OK), so
// neither is in the sample's time.
//
// The baseline is a plain loop doing the same on the same tap in the same run: write() of the
// same frames (TX), read() of the same burst (RX). Samples alternate, each figure the median.
// Needs root (CAP_NET_ADMIN): the harness moves itself into a network namespace of its own,
// so the tap never touches the host's interfaces and vanishes with the process at the latest.
// Prints figures only; never asserts.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "perf/bench_options.h"
#include "perf/bench_report.h"
#include "perf/device_bench.h"
#include "virtio/mmio/mmio_transport.h"
#include "virtio/mmio/registers.h"
#include "virtio/net/net_device.h"
#include "virtio/net/tap.h"
#include "virtio/spec.h"
#include "virtio/testing/fake_driver_queue.h"
#include "virtio/testing/fake_mmio_driver.h"
#include "vmm/base/event_fd.h"
#include "vmm/base/event_loop.h"
#include "vmm/base/guest_memory.h"
#include "vmm/base/metrics.h"
#include "vmm/base/unique_fd.h"

namespace ember::perf {
namespace {

using Clock = std::chrono::steady_clock;
using virtio::net::LinuxTap;
using virtio::net::NetDevice;

constexpr char kHarness[] = "ember-net-bench";
constexpr char kUsage[] =
    "usage: ember-net-bench [--runs N] [--seconds S] [--burst N] [--tap NAME] [--verbose]\n"
    "\n"
    "  --runs N      samples per figure and variant (default 9); each figure is the median\n"
    "  --seconds S   length of one TX sample (default 0.3)\n"
    "  --burst N     64-byte frames in one RX sample (default 65536; half that at 1500 bytes)\n"
    "  --tap NAME    the tap to create in the harness's own network namespace (default\n"
    "                embench0)\n"
    "  --verbose     print every sample to stderr\n"
    "\n"
    "Needs root; without it prints a note on stderr and no figures.\n";

constexpr std::uint64_t kGuestMemory = 32 << 20;
constexpr base::GuestAddress kRxQueueBase = 0x1000;
constexpr base::GuestAddress kTxQueueBase = 0x4000;
constexpr base::GuestAddress kBuffersBase = 0x10000;
constexpr std::uint16_t kQueueSize = 256;
// Linux's mergeable RX buffers for a 1500-byte MTU are about this size.
constexpr std::uint32_t kRxBufferBytes = 2048;
constexpr std::size_t kHeaderBytes = sizeof(virtio::net::VirtioNetHeader);
constexpr std::uint64_t kDriverFeatures = virtio::FeatureBit(virtio::kFeatureVersion1) |
                                          virtio::FeatureBit(virtio::kFeatureEventIdx) |
                                          virtio::FeatureBit(virtio::net::kFeatureMrgRxbuf);
// IEEE 802 local experimental ethertype: no protocol handler on the host takes it.
constexpr std::uint16_t kEtherType = 0x88b5;
constexpr std::uint8_t kGuestMac[6] = {0x06, 0x00, 0xac, 0x10, 0x00, 0x02};
constexpr std::uint8_t kPeerMac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};

[[noreturn]] void Fail(const std::string& message) { Die(kHarness, message); }

template <typename T>
T Check(absl::StatusOr<T> value, const std::string& what) {
  return CheckOk(kHarness, std::move(value), what);
}
void Check(const absl::Status& status, const std::string& what) { CheckOk(kHarness, status, what); }

struct Options {
  int runs = 9;
  double seconds = 0.3;
  std::size_t burst = 65536;
  std::string tap = "embench0";
  bool verbose = false;
};

Options ParseOptions(int argc, char** argv) {
  Options options;
  BenchOptions(kHarness, kUsage)
      .Number("--runs", &options.runs, 1)
      .Number("--seconds", &options.seconds, kMinSampleSeconds)
      .Number("--burst", &options.burst, std::size_t{1024})
      .Text("--tap", &options.tap)
      .Flag("--verbose", &options.verbose)
      .Parse(argc, argv);
  if (options.tap.empty() || options.tap.size() >= IFNAMSIZ) {
    Fail(std::string("--tap: not a valid interface name\n") + kUsage);
  }
  return options;
}

// One Ethernet frame of `bytes` (no FCS): destination, source, ethertype, a byte pattern.
std::vector<std::uint8_t> MakeFrame(std::size_t bytes, const std::uint8_t (&dst)[6],
                                    const std::uint8_t (&src)[6]) {
  std::vector<std::uint8_t> frame(bytes);
  std::memcpy(frame.data(), dst, 6);
  std::memcpy(frame.data() + 6, src, 6);
  frame[12] = kEtherType >> 8;
  frame[13] = kEtherType & 0xff;
  for (std::size_t i = 14; i < bytes; ++i) frame[i] = static_cast<std::uint8_t>(i * 7);
  return frame;
}

// The tap all samples use: persistent (so the device's and the baseline's fds attach to the
// same interface in turn), up, with a transmit queue long enough for a whole RX burst.
// Deleted on destruction; the network namespace takes it with it if the harness dies first.
class BenchTap {
 public:
  BenchTap(const std::string& name, std::size_t queue_length) : name_(name) {
    std::unique_ptr<LinuxTap> tap =
        Check(LinuxTap::Open(name, LinuxTap::Mode::kCreate), "create tap " + name);
    if (::ioctl(tap->fd(), TUNSETPERSIST, 1) != 0) Fail(ErrnoText("TUNSETPERSIST " + name));
    base::UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!sock) Fail(ErrnoText("socket(AF_INET)"));
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, name.data(), name.size());
    ifr.ifr_qlen = static_cast<int>(queue_length);
    if (::ioctl(sock.Get(), SIOCSIFTXQLEN, &ifr) != 0) Fail(ErrnoText("SIOCSIFTXQLEN " + name));
    index_ = ::if_nametoindex(name.c_str());
    if (index_ == 0) Fail(ErrnoText("if_nametoindex " + name));
  }
  ~BenchTap() {
    auto tap = LinuxTap::Open(name_, LinuxTap::Mode::kExisting);
    if (!tap.ok() || ::ioctl((*tap)->fd(), TUNSETPERSIST, 0) != 0) {
      std::fprintf(stderr, "%s: could not delete tap %s (it goes with the namespace)\n", kHarness,
                   name_.c_str());
    }
  }
  BenchTap(const BenchTap&) = delete;
  BenchTap& operator=(const BenchTap&) = delete;

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] unsigned index() const { return index_; }

 private:
  std::string name_;
  unsigned index_ = 0;
};

// The host stack's side of RX: an AF_PACKET socket that transmits on the tap, so each frame
// lands in the tap's queue for whoever holds the tap fd. Bypasses the qdisc (the frame goes
// straight to the tap's queue, as far as the kernel allows).
class FrameInjector {
 public:
  explicit FrameInjector(const BenchTap& tap)
      : sock_(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0)) {
    if (!sock_) Fail(ErrnoText("socket(AF_PACKET)"));
    const int one = 1;
    if (::setsockopt(sock_.Get(), SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one) != 0) {
      Fail(ErrnoText("PACKET_QDISC_BYPASS"));
    }
    const int sndbuf = 64 << 20;
    (void)::setsockopt(sock_.Get(), SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf);
    sockaddr_ll addr{};
    addr.sll_family = AF_PACKET;
    addr.sll_protocol = 0;  // send only
    addr.sll_ifindex = static_cast<int>(tap.index());
    // sockaddr_ll is what bind() takes through its generic pointer.
    if (::bind(sock_.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      Fail(ErrnoText("bind AF_PACKET to " + tap.name()));
    }
  }

  // Queues `count` copies of `frame` on the tap; every one must be taken.
  void Inject(const std::vector<std::uint8_t>& frame, std::size_t count) const {
    for (std::size_t i = 0; i < count; ++i) {
      if (::send(sock_.Get(), frame.data(), frame.size(), 0) !=
          static_cast<ssize_t>(frame.size())) {
        Fail(ErrnoText("send on AF_PACKET (frame " + std::to_string(i) + ")"));
      }
    }
  }

 private:
  base::UniqueFd sock_;
};

// The guest side of one device sample: the NetDevice on the tap, its transport, the fake
// driver's rings and buffers, and the loop, wired as in ember-vmm.
class DeviceSample {
 public:
  DeviceSample(const BenchTap& tap, std::uint32_t tx_frame_bytes)
      : memory_(Check(base::GuestMemory::Create({{0, kGuestMemory}}), "guest memory")),
        rx_(memory_, kRxQueueBase, kQueueSize),
        tx_(memory_, kTxQueueBase, kQueueSize),
        alloc_(kBuffersBase, kGuestMemory - kBuffersBase),
        rx_buffers_(kHarness, alloc_, kQueueSize, kRxBufferBytes),
        tx_buffers_(kHarness, alloc_, kQueueSize,
                    static_cast<std::uint32_t>(kHeaderBytes + tx_frame_bytes)),
        loop_(Check(base::EventLoop::Create(), "event loop")) {
    virtio::net::NetConfig config;
    config.iface_id = "bench";
    config.host_dev_name = tap.name();
    config.guest_mac = virtio::net::MacAddress{kGuestMac[0], kGuestMac[1], kGuestMac[2],
                                               kGuestMac[3], kGuestMac[4], kGuestMac[5]};
    config.queue_size = kQueueSize;
    transport_ = Check(virtio::MmioTransport::Create(
                           memory_, Check(NetDevice::Create(config, metrics_), "net device"),
                           Check(base::EventFd::Create(), "irqfd"), metrics_),
                       "transport");
    // TX buffers hold a zero virtio-net header (no offload) and the frame, written once.
    const std::vector<std::uint8_t> header(kHeaderBytes, 0);
    const std::vector<std::uint8_t> frame = MakeFrame(tx_frame_bytes, kPeerMac, kGuestMac);
    for (base::GuestAddress addr : tx_buffers_.addrs()) {
      Check(memory_.Write(addr, header), "write TX header");
      Check(memory_.Write(addr + kHeaderBytes, frame), "write TX frame");
    }
    // Linux posts its RX buffers before DRIVER_OK.
    while (!rx_buffers_.empty()) rx_buffers_.Post(rx_, kRxBufferBytes, true);
    virtio::testing::FakeMmioDriver probe(*transport_);
    Check(probe.Initialize(kDriverFeatures & probe.DeviceFeatures(), {rx_.layout(), tx_.layout()}),
          "probe");
    WireTransport(
        kHarness, loop_, *transport_, clock_, [this] { OnInterrupt(); }, events_);
  }

  // Keeps the TX ring full of `frame_bytes` frames for `seconds`; returns frames per second.
  DeviceRate RunTx(double seconds) {
    const Clock::time_point start = clock_.Start();
    deadline_ =
        start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    tx_running_ = true;
    // The guest's first fill of its TX ring is inside the sample: the guest's work, timed.
    clock_.Guest([this] { PostTx(); });
    RunUntil(
        kHarness, loop_, events_, [this] { return !tx_running_ && tx_buffers_.in_use() == 0; },
        "TX");
    return clock_.Rate(static_cast<double>(tx_done_));
  }

  // Moves `count` frames of `frame_bytes` that wait on the tap into the guest; returns frames
  // per second.
  DeviceRate RunRx(std::size_t count, std::size_t frame_bytes) {
    rx_want_ = count;
    rx_frame_bytes_ = frame_bytes;
    (void)clock_.Start();
    // The tap has been readable since the burst was queued: the loop notices at once.
    RunUntil(
        kHarness, loop_, events_, [this] { return rx_got_ >= rx_want_; },
        "RX (frames lost on the way to the tap?)");
    return clock_.Rate(static_cast<double>(rx_got_));
  }

 private:
  // The guest's interrupt handler (vm_interrupt + virtnet's RX and TX completion).
  void OnInterrupt() {
    transport_->irqfd().Consume();
    virtio::testing::FakeMmioDriver mmio(*transport_);
    mmio.Write32(virtio::mmio::kInterruptAck, mmio.Read32(virtio::mmio::kInterruptStatus));
    bool rx_posted = false;
    while (auto used = rx_.PopUsed()) {
      (void)rx_buffers_.Release(used->id);
      // A burst frame is its header and the frame in one buffer; anything else (the host
      // stack's own chatter) is not counted.
      if (used->len == kHeaderBytes + rx_frame_bytes_) ++rx_got_;
      rx_buffers_.Post(rx_, kRxBufferBytes, true);
      rx_posted = true;
    }
    rx_.SetUsedEvent(rx_.UsedIdx());
    if (rx_posted && rx_kick_.NeedsKick(rx_))
      transport_->queue_event(virtio::net::kRxQueue).Signal();
    while (auto used = tx_.PopUsed()) {
      (void)tx_buffers_.Release(used->id);
      ++tx_done_;
    }
    tx_.SetUsedEvent(tx_.UsedIdx());
    if (tx_running_) {
      if (Clock::now() >= deadline_) {
        tx_running_ = false;
      } else {
        PostTx();
      }
    }
  }

  void PostTx() {
    while (!tx_buffers_.empty()) tx_buffers_.Post(tx_, tx_buffers_.bytes(), false);
    if (tx_kick_.NeedsKick(tx_)) transport_->queue_event(virtio::net::kTxQueue).Signal();
  }

  base::MetricsRegistry metrics_;  // the sample's own, so samples do not add up
  base::GuestMemory memory_;
  virtio::testing::FakeDriverQueue rx_;
  virtio::testing::FakeDriverQueue tx_;
  virtio::testing::FakeGuestAllocator alloc_;
  GuestBufferPool rx_buffers_;
  GuestBufferPool tx_buffers_;
  std::unique_ptr<virtio::MmioTransport> transport_;
  base::EventLoop loop_;
  SampleClock clock_;
  std::uint64_t events_ = 0;
  KickPolicy rx_kick_;
  KickPolicy tx_kick_;
  Clock::time_point deadline_{};
  bool tx_running_ = false;
  std::uint64_t tx_done_ = 0;
  std::size_t rx_want_ = 0;
  std::size_t rx_frame_bytes_ = 0;
  std::size_t rx_got_ = 0;
};

// The baseline's end of the tap: attached as the device attaches it (virtio-net header of
// 12 bytes, no offloads, non-blocking).
std::unique_ptr<LinuxTap> OpenPlainTap(const BenchTap& tap) {
  std::unique_ptr<LinuxTap> plain =
      Check(LinuxTap::Open(tap.name(), LinuxTap::Mode::kExisting), "open tap " + tap.name());
  Check(plain->SetVnetHeaderSize(static_cast<int>(kHeaderBytes)), "TUNSETVNETHDRSZ");
  Check(plain->SetOffloads(0), "TUNSETOFFLOAD");
  return plain;
}

// Plain TX: write() of the same header and frame for `seconds`; frames per second.
double PlainTx(const BenchTap& tap, std::size_t frame_bytes, double seconds) {
  std::unique_ptr<LinuxTap> plain = OpenPlainTap(tap);
  std::vector<std::uint8_t> bytes(kHeaderBytes, 0);
  const std::vector<std::uint8_t> frame = MakeFrame(frame_bytes, kPeerMac, kGuestMac);
  bytes.insert(bytes.end(), frame.begin(), frame.end());
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::uint64_t frames = 0;
  // The clock is read once per 64 frames, as the device's guest reaps in batches.
  do {
    for (int i = 0; i < 64; ++i) {
      if (::write(plain->fd(), bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
        Fail(ErrnoText("write to tap " + tap.name()));
      }
      ++frames;
    }
  } while (Clock::now() < deadline);
  return static_cast<double>(frames) / SecondsSince(start);
}

// Plain RX: read() of a burst of `count` frames queued on the tap; frames per second.
double PlainRx(const BenchTap& tap, const FrameInjector& injector,
               const std::vector<std::uint8_t>& frame, std::size_t count) {
  std::unique_ptr<LinuxTap> plain = OpenPlainTap(tap);
  injector.Inject(frame, count);
  std::vector<std::uint8_t> buffer(kRxBufferBytes);
  std::size_t got = 0;
  const Clock::time_point start = Clock::now();
  while (got < count) {
    const ssize_t n = ::read(plain->fd(), buffer.data(), buffer.size());
    if (n < 0 && errno == EAGAIN) {
      pollfd pfd{plain->fd(), POLLIN, 0};
      if (::poll(&pfd, 1, 5000) != 1) Fail("plain RX: frames lost on the way to the tap");
      continue;
    }
    if (n < 0) Fail(ErrnoText("read from tap " + tap.name()));
    if (static_cast<std::size_t>(n) == kHeaderBytes + frame.size()) ++got;
  }
  return static_cast<double>(got) / SecondsSince(start);
}

DeviceRate DeviceTx(const BenchTap& tap, std::size_t frame_bytes, double seconds) {
  DeviceSample sample(tap, static_cast<std::uint32_t>(frame_bytes));
  return sample.RunTx(seconds);
}

DeviceRate DeviceRx(const BenchTap& tap, const FrameInjector& injector,
                    const std::vector<std::uint8_t>& frame, std::size_t count) {
  DeviceSample sample(tap, 64);
  injector.Inject(frame, count);
  return sample.RunRx(count, frame.size());
}

int Main(int argc, char** argv) {
  const Options options = ParseOptions(argc, argv);
  if (::geteuid() != 0) {
    std::fprintf(stderr,
                 "%s: not root: skipping net_tx_pps_64b, net_rx_pps_64b, net_tx_gbps_1500b and "
                 "net_rx_gbps_1500b (a real tap in a private network namespace needs "
                 "CAP_NET_ADMIN)\n",
                 kHarness);
    return 0;
  }
  if (::unshare(CLONE_NEWNET) != 0) Fail(ErrnoText("unshare(CLONE_NEWNET)"));
  // No IPv6 on the new tap: its router solicitations and the like would land in RX samples.
  if (FILE* f = std::fopen("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w")) {
    std::fputs("1\n", f);
    std::fclose(f);
  }
  const BenchTap tap(options.tap, options.burst + 4096);
  const FrameInjector injector(tap);

  char note[400];
  std::snprintf(note, sizeof note,
                "net data path: real tap %s in a private network namespace, 256-entry queues, "
                "MRG_RXBUF with %u-byte RX buffers; TX samples of %.1f s, RX bursts of %zu (64 B) "
                "/ %zu (1500 B) frames; median of %d; frame sizes exclude the FCS; one thread; "
                "device figures per second of its time less the fake guest's timed work, "
                "_with_guest by the wall clock",
                tap.name().c_str(), kRxBufferBytes, options.seconds, options.burst,
                options.burst / 2, options.runs);
  PrintNote(note);

  struct Size {
    std::size_t bytes;
    std::size_t burst;
    std::string tx_name, rx_name, unit;
    double scale;  // from frames per second
  };
  const double gbit_per_frame = 1500.0 * 8 / 1e9;
  const Size sizes[] = {
      {64, options.burst, "net_tx_pps_64b", "net_rx_pps_64b", "pps", 1.0},
      {1500, options.burst / 2, "net_tx_gbps_1500b", "net_rx_gbps_1500b", "Gbit/s", gbit_per_frame},
  };
  for (const Size& size : sizes) {
    const std::string suffix = size.tx_name.substr(size.tx_name.rfind('_'));
    const std::string kind = size.unit == "pps" ? "_pps" : "_gbps";
    MeasureAgainstBaseline(
        size.tx_name, "tap_write" + kind + suffix, size.unit, size.scale,
        [&] { return DeviceTx(tap, size.bytes, options.seconds); },
        [&] { return PlainTx(tap, size.bytes, options.seconds); }, options.runs, options.verbose);
    const std::vector<std::uint8_t> rx_frame = MakeFrame(size.bytes, kGuestMac, kPeerMac);
    MeasureAgainstBaseline(
        size.rx_name, "tap_read" + kind + suffix, size.unit, size.scale,
        [&] { return DeviceRx(tap, injector, rx_frame, size.burst); },
        [&] { return PlainRx(tap, injector, rx_frame, size.burst); }, options.runs,
        options.verbose);
  }
  return 0;
}

}  // namespace
}  // namespace ember::perf

int main(int argc, char** argv) { return ember::perf::Main(argc, argv); }
