// Measures a virtio-vsock stream from the host side (issue 5): a host process's Unix socket,
// connected to the device's backend with Firecracker's `CONNECT <port>\n` handshake, streams
// into the guest through the real VsockDevice behind the real MmioTransport, driven through
// guest-memory rings by the fake guest driver (virtio/testing), with a real base::EventLoop
// dispatching the queues' ioeventfds, the device's EventSet (listener and host sockets) and the
// irqfd, as ember-vmm's VMM thread does. No guest CPU: the "guest" is the irqfd handler on the
// same thread. It posts 4 KiB RX buffers (Linux's virtio_transport default), takes every
// payload as read by its application at once, and returns credit as Linux does (a
// CREDIT_UPDATE once less than 64 KiB of its 256 KiB buffer is free to the device). The host
// writer is a handler on the same loop, writing 64 KiB at a time whenever its socket takes
// more.
//
// Guest to host, on the same kind of connection: the fake guest sends RW packets as Linux's
// virtio_transport does, each a 44-byte header and up to 64 KiB of payload in two readable
// descriptors, as much as the device's credit allows, sending more whenever a TX completion or
// a CREDIT_UPDATE comes back. Its payload buffers are filled once (its application's copy into
// them is not counted); the device reads every byte of them. The host reader is a handler on
// the same loop reading 64 KiB at a time. The guest's first packets, as much as the device's
// credit allows, are posted before the sample's clock starts.
//
// In both directions the device's figure is what the one loop thread moves end to end per
// second of its time less what the fake guest spent in its own work: its interrupt handler,
// timed around every call (taking the interrupt off the irqfd, acknowledging it, reaping used
// entries and reading their headers, reposting RX buffers, returning credit with
// CREDIT_UPDATE, producing RW packets, the kicks). In a VM that work runs on the guest's vCPU
// thread, not the VMM's. The host process's writes and reads are not the guest's and stay
// counted, as the baseline counts its own; so does the loop's wake-up for the irqfd, which
// ember-vmm's loop does not watch. Guest work before the clock starts (the handshake,
// the first packets from guest to host) is not in the sample's time and is not subtracted. The
// same samples by the wall clock, the guest's work included, are printed as NAME_with_guest
// against the same baseline, and a note gives the guest's share of the samples' time.
//
// The baselines are a plain Unix stream socket pair moving the same bytes in the same run, on
// one thread, with 64 KiB writes: host to guest, reads as the device makes them, one readv into
// 16 buffers of 4 KiB (the chunks the guest receives); guest to host, 64 KiB reads as the host
// reader makes them. Samples alternate,
// the figure the median. Prints figures only; never asserts.
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "perf/bench_options.h"
#include "perf/bench_report.h"
#include "perf/device_bench.h"
#include "virtio/mmio/mmio_transport.h"
#include "virtio/mmio/registers.h"
#include "virtio/spec.h"
#include "virtio/testing/fake_driver_queue.h"
#include "virtio/testing/fake_mmio_driver.h"
#include "virtio/testing/fake_vsock_driver.h"
#include "virtio/vsock/packet.h"
#include "virtio/vsock/vsock_device.h"
#include "vmm/base/event_fd.h"
#include "vmm/base/event_loop.h"
#include "vmm/base/guest_memory.h"
#include "vmm/base/metrics.h"
#include "vmm/base/unique_fd.h"

namespace ember::perf {
namespace {

using Clock = std::chrono::steady_clock;
namespace vsock = virtio::vsock;

constexpr char kHarness[] = "ember-vsock-bench";
constexpr char kUsage[] =
    "usage: ember-vsock-bench [--runs N] [--seconds S] [--verbose]\n"
    "\n"
    "  --runs N      samples per variant (default 9); the figure is the median\n"
    "  --seconds S   length of one sample (default 0.3)\n"
    "  --verbose     print every sample to stderr\n";

constexpr std::uint64_t kGuestMemory = 16 << 20;
constexpr base::GuestAddress kRxQueueBase = 0x1000;
constexpr base::GuestAddress kTxQueueBase = 0x4000;
constexpr base::GuestAddress kEventQueueBase = 0x7000;
constexpr base::GuestAddress kBuffersBase = 0x10000;
constexpr std::uint16_t kQueueSize = 256;
constexpr std::uint64_t kDriverFeatures =
    virtio::FeatureBit(virtio::kFeatureVersion1) | virtio::FeatureBit(virtio::kFeatureEventIdx);
constexpr std::uint64_t kGuestCid = virtio::testing::kFakeGuestCid;
constexpr std::uint32_t kGuestPort = 5000;
// Linux's virtio_transport: 4 KiB of payload per RX buffer, a 256 KiB socket buffer, and a
// CREDIT_UPDATE once less than one maximal packet (64 KiB) of it is free.
constexpr std::uint32_t kRxPayload = 4096;
constexpr std::uint32_t kGuestBufAlloc = 256 * 1024;
constexpr std::uint32_t kCreditUpdateBelow = vsock::kMaxPayload;
constexpr std::size_t kWriteChunk = 64 * 1024;
// The device reads a host socket with one readv across up to 16 of those buffers (64 KiB, one
// maximal packet); the baseline reads the same way, so that it makes no more syscalls per byte
// than the device does.
constexpr std::size_t kReadBatch = vsock::kMaxPayload / kRxPayload;
// Guest to host: the fake guest's TX payload buffers (one maximal packet each), more than the
// device's 256 KiB of credit can keep in flight.
constexpr std::size_t kTxDataSlots = 8;

enum class Direction { kHostToGuest, kGuestToHost };

[[noreturn]] void Fail(const std::string& message) { Die(kHarness, message); }

template <typename T>
T Check(absl::StatusOr<T> value, const std::string& what) {
  return CheckOk(kHarness, std::move(value), what);
}
// The fake guest checks every header it reads or writes: no strings are built unless the
// check fails, so that their heap allocations are not counted against the device.
void Check(const absl::Status& status, const char* what) {
  if (!status.ok()) [[unlikely]] CheckOk(kHarness, status, what);
}

struct Options {
  int runs = 9;
  double seconds = 0.3;
  bool verbose = false;
};

Options ParseOptions(int argc, char** argv) {
  Options options;
  BenchOptions(kHarness, kUsage)
      .Number("--runs", &options.runs, 1)
      .Number("--seconds", &options.seconds, kMinSampleSeconds)
      .Flag("--verbose", &options.verbose)
      .Parse(argc, argv);
  return options;
}

void SetNonBlocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) Fail(ErrnoText("O_NONBLOCK"));
}

// What the host writes: the same 64 KiB of non-zero bytes over and over, in both variants.
const std::vector<std::uint8_t>& StreamChunk() {
  static const std::vector<std::uint8_t> chunk = [] {
    std::vector<std::uint8_t> bytes(kWriteChunk);
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 13 + 1);
    return bytes;
  }();
  return chunk;
}

// One device sample: a fresh VsockDevice listening in `dir`, its transport, the fake guest
// driver's rings and buffers, the loop, and the host process's stream.
class DeviceSample {
 public:
  explicit DeviceSample(const std::string& dir)
      : memory_(Check(base::GuestMemory::Create({{0, kGuestMemory}}), "guest memory")),
        rx_(memory_, kRxQueueBase, kQueueSize),
        tx_(memory_, kTxQueueBase, kQueueSize),
        ev_(memory_, kEventQueueBase, kQueueSize),
        alloc_(kBuffersBase, kGuestMemory - kBuffersBase),
        rx_buffers_(kHarness, alloc_, kQueueSize,
                    static_cast<std::uint32_t>(vsock::kHeaderSize) + kRxPayload),
        tx_buffers_(kHarness, alloc_, kQueueSize, static_cast<std::uint32_t>(vsock::kHeaderSize)),
        event_buffer_(alloc_.Alloc(8)),
        data_slot_of_head_(kQueueSize, -1),
        loop_(Check(base::EventLoop::Create(), "event loop")),
        uds_path_(dir + "/v.sock") {
    vsock::VsockConfig config;
    config.vsock_id = "bench";
    config.guest_cid = kGuestCid;
    config.uds_path = uds_path_;
    config.queue_size = kQueueSize;
    transport_ = Check(virtio::MmioTransport::Create(
                           memory_, Check(vsock::VsockDevice::Create(config, metrics_), "vsock"),
                           Check(base::EventFd::Create(), "irqfd"), metrics_),
                       "transport");
    while (!rx_buffers_.empty()) rx_buffers_.Post(rx_, rx_buffers_.bytes(), true);
    const std::vector<std::uint8_t>& chunk = StreamChunk();
    for (std::size_t i = 0; i < kTxDataSlots; ++i) {
      data_slots_.push_back({alloc_.Alloc(vsock::kHeaderSize, 64), alloc_.Alloc(chunk.size(), 64)});
      Check(memory_.Write(data_slots_.back().payload, chunk), "fill TX payload");
      free_data_slots_.push_back(i);
    }
    const virtio::testing::FakeBuffer event{event_buffer_, 8, true};
    ev_.AddChain(std::span(&event, 1));
    virtio::testing::FakeMmioDriver probe(*transport_);
    Check(probe.Initialize(kDriverFeatures & probe.DeviceFeatures(),
                           {rx_.layout(), tx_.layout(), ev_.layout()}),
          "probe");
    WireTransport(
        kHarness, loop_, *transport_, clock_, [this] { OnInterrupt(); }, events_);
  }

  // The host process connects for guest port kGuestPort, the guest accepts, then one side
  // streams to the other for `seconds`; returns bytes per second that reached the other side.
  DeviceRate Run(double seconds, Direction direction) {
    Connect();
    SetNonBlocking(host_.Get());
    const int host = host_.Get();
    if (direction == Direction::kHostToGuest) {
      Check(loop_.Add(host, EPOLLOUT, [this](std::uint32_t) { Write(); }), "watch host stream");
    } else {
      Check(loop_.Add(host, EPOLLIN, [this](std::uint32_t) { Read(); }), "watch host stream");
      guest_sends_ = true;
      SendData();
    }
    const Clock::time_point start = clock_.Start();
    const Clock::time_point deadline =
        start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    RunUntil(
        kHarness, loop_, events_, [&] { return Clock::now() >= deadline; }, "stream");
    const DeviceRate rate = clock_.Rate(static_cast<double>(received_));
    loop_.Remove(host);
    return rate;
  }

 private:
  void Connect() {
    host_ = base::UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!host_) Fail(ErrnoText("socket(AF_UNIX)"));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, uds_path_.data(), uds_path_.size());
    // sockaddr_un is what connect() takes through its generic pointer.
    if (::connect(host_.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      Fail(ErrnoText("connect " + uds_path_));
    }
    const std::string line = "CONNECT " + std::to_string(kGuestPort) + "\n";
    if (::write(host_.Get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      Fail(ErrnoText("write CONNECT"));
    }
    // The guest answers the REQUEST in OnInterrupt; the device then writes "OK <port>\n".
    RunUntil(
        kHarness, loop_, events_, [this] { return host_port_ != 0; }, "vsock REQUEST");
    std::string ok;
    char c = 0;
    while (ok.empty() || ok.back() != '\n') {
      CheckOk(kHarness, loop_.RunOnce(0), "event loop");
      const ssize_t n = ::recv(host_.Get(), &c, 1, MSG_DONTWAIT);
      if (n == 1) ok.push_back(c);
      if (n == 0) Fail("the device closed the host stream during the handshake");
    }
    if (ok != "OK " + std::to_string(host_port_) + "\n") Fail("unexpected handshake: " + ok);
  }

  // The host process: writes while its socket takes more.
  void Write() {
    const std::vector<std::uint8_t>& chunk = StreamChunk();
    for (;;) {
      const ssize_t n = ::send(host_.Get(), chunk.data(), chunk.size(), MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n < 0) Fail(ErrnoText("send on the host stream"));
    }
  }

  // The host process: reads what the guest sent, 64 KiB at a time.
  void Read() {
    for (;;) {
      const ssize_t n = ::recv(host_.Get(), read_buffer_.data(), read_buffer_.size(), MSG_DONTWAIT);
      if (n > 0) {
        received_ += static_cast<std::uint64_t>(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      Fail(n == 0 ? std::string("the device closed the host stream") : ErrnoText("recv"));
    }
  }

  // The guest's interrupt handler (vm_interrupt + virtio_transport's RX and TX completion).
  void OnInterrupt() {
    transport_->irqfd().Consume();
    virtio::testing::FakeMmioDriver mmio(*transport_);
    mmio.Write32(virtio::mmio::kInterruptAck, mmio.Read32(virtio::mmio::kInterruptStatus));
    while (auto used = tx_.PopUsed()) {
      int& slot = data_slot_of_head_[used->id];
      if (slot >= 0) {
        free_data_slots_.push_back(static_cast<std::size_t>(slot));
        slot = -1;
      } else {
        (void)tx_buffers_.Release(used->id);
      }
    }
    tx_.SetUsedEvent(tx_.UsedIdx());
    bool rx_posted = false;
    while (auto used = rx_.PopUsed()) {
      const base::GuestAddress addr = rx_buffers_.Release(used->id);
      std::array<std::uint8_t, vsock::kHeaderSize> raw{};
      Check(memory_.Read(addr, raw), "read RX header");
      const vsock::Header h = vsock::Header::Decode(raw);
      // Every packet from the device carries its credit.
      peer_buf_alloc_ = h.buf_alloc;
      peer_fwd_cnt_ = h.fwd_cnt;
      switch (static_cast<vsock::Op>(h.op)) {
        case vsock::Op::kRequest:
          host_port_ = h.src_port;
          Send(vsock::Op::kResponse);
          break;
        case vsock::Op::kRw:
          received_ += h.len;
          fwd_cnt_ += h.len;  // the application reads it at once
          break;
        case vsock::Op::kCreditRequest:
          Send(vsock::Op::kCreditUpdate);
          break;
        case vsock::Op::kCreditUpdate:
          break;
        default:
          Fail("unexpected vsock op " + std::to_string(h.op) + " from the device");
      }
      rx_buffers_.Post(rx_, rx_buffers_.bytes(), true);
      rx_posted = true;
    }
    rx_.SetUsedEvent(rx_.UsedIdx());
    if (host_port_ != 0 && kGuestBufAlloc - (fwd_cnt_ - fwd_cnt_sent_) < kCreditUpdateBelow) {
      Send(vsock::Op::kCreditUpdate);
    }
    if (rx_posted && rx_kick_.NeedsKick(rx_)) {
      transport_->queue_event(vsock::kRxQueue).Signal();
    }
    if (guest_sends_) SendData();
  }

  // The guest's application writing without end: RW packets of up to 64 KiB while the
  // device's credit and the guest's TX buffers allow (virtio_transport_send_pkt_info).
  void SendData() {
    bool sent = false;
    while (!free_data_slots_.empty() && tx_.free_descriptors() >= 2) {
      const std::uint32_t in_flight = tx_cnt_ - peer_fwd_cnt_;
      const std::uint32_t credit = in_flight >= peer_buf_alloc_ ? 0 : peer_buf_alloc_ - in_flight;
      if (credit == 0) break;
      const auto len = static_cast<std::uint32_t>(std::min<std::size_t>(credit, kWriteChunk));
      const std::size_t slot = free_data_slots_.back();
      free_data_slots_.pop_back();
      vsock::Header h = GuestHeader(vsock::Op::kRw);
      h.len = len;
      Check(memory_.Write(data_slots_[slot].header, h.Encode()), "write TX header");
      const std::array<virtio::testing::FakeBuffer, 2> chain{
          virtio::testing::FakeBuffer{data_slots_[slot].header,
                                      static_cast<std::uint32_t>(vsock::kHeaderSize), false},
          virtio::testing::FakeBuffer{data_slots_[slot].payload, len, false}};
      data_slot_of_head_[tx_.AddChain(chain)] = static_cast<int>(slot);
      tx_cnt_ += len;
      sent = true;
    }
    if (sent && tx_kick_.NeedsKick(tx_)) transport_->queue_event(vsock::kTxQueue).Signal();
  }

  // A header from the guest's side of the connection, with its credit.
  vsock::Header GuestHeader(vsock::Op op) {
    vsock::Header h = virtio::testing::GuestHeader(op, kGuestPort, host_port_, fwd_cnt_);
    h.buf_alloc = kGuestBufAlloc;  // Linux's credit, larger than the unit tests' fake guest's
    fwd_cnt_sent_ = fwd_cnt_;
    return h;
  }

  // One header-only packet from the guest's side of the connection, with its credit.
  void Send(vsock::Op op) {
    const vsock::Header h = GuestHeader(op);
    if (tx_buffers_.empty() || tx_.free_descriptors() == 0) {
      Fail("the device holds every TX buffer");
    }
    const base::GuestAddress addr =
        tx_buffers_.Post(tx_, static_cast<std::uint32_t>(vsock::kHeaderSize), false);
    Check(memory_.Write(addr, h.Encode()), "write TX header");
    if (tx_kick_.NeedsKick(tx_)) transport_->queue_event(vsock::kTxQueue).Signal();
  }

  base::MetricsRegistry metrics_;  // the sample's own, so samples do not add up
  base::GuestMemory memory_;
  virtio::testing::FakeDriverQueue rx_;
  virtio::testing::FakeDriverQueue tx_;
  virtio::testing::FakeDriverQueue ev_;
  virtio::testing::FakeGuestAllocator alloc_;
  GuestBufferPool rx_buffers_;
  GuestBufferPool tx_buffers_;
  base::GuestAddress event_buffer_;
  struct DataSlot {
    base::GuestAddress header;
    base::GuestAddress payload;
  };
  std::vector<DataSlot> data_slots_;
  std::vector<std::size_t> free_data_slots_;
  std::vector<int> data_slot_of_head_;  // -1: the head is not a data packet's
  base::EventLoop loop_;
  std::string uds_path_;
  std::unique_ptr<virtio::MmioTransport> transport_;
  SampleClock clock_;
  std::uint64_t events_ = 0;
  KickPolicy rx_kick_;
  KickPolicy tx_kick_;
  base::UniqueFd host_;
  std::uint32_t host_port_ = 0;
  std::uint32_t fwd_cnt_ = 0;  // wraps, as on the wire
  std::uint32_t fwd_cnt_sent_ = 0;
  std::uint64_t received_ = 0;
  // Guest to host.
  bool guest_sends_ = false;
  std::uint32_t tx_cnt_ = 0;           // payload bytes the guest sent; wraps
  std::uint32_t peer_buf_alloc_ = 0;   // the device's credit, from its last packet
  std::uint32_t peer_fwd_cnt_ = 0;
  std::vector<std::uint8_t> read_buffer_ = std::vector<std::uint8_t>(kWriteChunk);
};

// The baseline: the same bytes through a plain Unix stream socket pair on one thread, written
// in 64 KiB and read with readv into `read_count` buffers of `read_size`; bytes per second read.
double PlainSocketPair(double seconds, std::size_t read_size, std::size_t read_count) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) != 0) {
    Fail(ErrnoText("socketpair"));
  }
  const base::UniqueFd writer(fds[0]);
  const base::UniqueFd reader(fds[1]);
  const std::vector<std::uint8_t>& chunk = StreamChunk();
  std::vector<std::uint8_t> buffer(read_count * read_size);
  std::vector<iovec> iovs(read_count);
  for (std::size_t i = 0; i < read_count; ++i) iovs[i] = {buffer.data() + i * read_size, read_size};
  std::uint64_t received = 0;
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (Clock::now() < deadline) {
    while (::send(writer.Get(), chunk.data(), chunk.size(), MSG_DONTWAIT) > 0) {
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) Fail(ErrnoText("send on the socket pair"));
    for (;;) {
      const ssize_t n = ::readv(reader.Get(), iovs.data(), static_cast<int>(iovs.size()));
      if (n > 0) {
        received += static_cast<std::uint64_t>(n);
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) Fail(ErrnoText("readv on the pair"));
      break;
    }
  }
  return static_cast<double>(received) / SecondsSince(start);
}

DeviceRate DeviceStream(const std::string& dir, double seconds, Direction direction) {
  DeviceSample sample(dir);
  return sample.Run(seconds, direction);
}

int Main(int argc, char** argv) {
  const Options options = ParseOptions(argc, argv);
  char dir_template[] = "/tmp/ember-vsock-bench.XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) Fail(ErrnoText("mkdtemp"));
  const std::string dir = dir_template;

  char note[512];
  std::snprintf(note, sizeof note,
                "vsock stream host to guest: Unix-socket backend (CONNECT <port>), 256 x 4 KiB "
                "guest RX buffers (Linux's size), 256 KiB guest credit; baseline reads with "
                "readv into 16 x 4 KiB as the device does; samples of %.1f s, median of %d; one "
                "thread for host writer, device and fake guest; the device's figure per second "
                "of its time less the fake guest's timed work, _with_guest by the wall clock",
                options.seconds, options.runs);
  PrintNote(note);
  MeasureAgainstBaseline(
      "vsock_stream_mibs", "unix_socketpair_mibs", "MiB/s", 1.0 / (1 << 20),
      [&] { return DeviceStream(dir, options.seconds, Direction::kHostToGuest); },
      // The guest's RX buffers, read as the device reads a host socket: one readv across a
      // batch of them (see kReadBatch).
      [&] { return PlainSocketPair(options.seconds, kRxPayload, kReadBatch); }, options.runs,
      options.verbose);
  std::snprintf(note, sizeof note,
                "vsock stream guest to host: the same connection, guest RW packets of 64 KiB "
                "(header + payload in 2 descriptors) within the device's 256 KiB credit, host "
                "reads of 64 KiB; baseline reads of 64 KiB");
  PrintNote(note);
  MeasureAgainstBaseline(
      "vsock_stream_g2h_mibs", "unix_socketpair_64k_reads_mibs", "MiB/s", 1.0 / (1 << 20),
      [&] { return DeviceStream(dir, options.seconds, Direction::kGuestToHost); },
      [&] { return PlainSocketPair(options.seconds, kWriteChunk, 1); }, options.runs,
      options.verbose);
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return 0;
}

}  // namespace
}  // namespace ember::perf

int main(int argc, char** argv) { return ember::perf::Main(argc, argv); }
