#include "virtio/vsock/vsock_device.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/unit/virtio/device_harness.h"
#include "virtio/mmio/registers.h"
#include "virtio/spec.h"
#include "virtio/testing/fake_driver_queue.h"
#include "virtio/testing/fake_vsock_driver.h"

extern "C" {
extern const unsigned kUapiVsockHdrSize;
extern const unsigned kUapiVsockHdrLenOffset;
extern const unsigned kUapiVsockHdrOpOffset;
extern const unsigned kUapiVsockHdrFwdCntOffset;
extern const unsigned kUapiVsockTypeStream;
extern const unsigned kUapiVsockOpRequest;
extern const unsigned kUapiVsockOpCreditRequest;
extern const unsigned kUapiVsockShutdownRcv;
extern const unsigned kUapiVsockShutdownSend;
extern const unsigned kUapiVsockEventTransportReset;
extern const unsigned kUapiVirtioIdVsock;
}

namespace ember::virtio::vsock {
namespace {

using testing::DeviceHarness;
using testing::FakeDriverQueue;
using testing::FakeVsockDriver;
using testing::GuestHeader;
using testing::VsockPacket;

constexpr std::uint64_t kMemSize = 16 << 20;
constexpr std::uint16_t kQueueSize = 256;
constexpr std::uint64_t kCid = testing::kFakeGuestCid;
constexpr std::uint64_t kFeatures = FeatureBit(kFeatureVersion1) | FeatureBit(kFeatureEventIdx);

std::vector<std::uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::vector<std::uint8_t> Pattern(std::size_t len, std::uint8_t seed) {
  std::vector<std::uint8_t> bytes(len);
  for (std::size_t i = 0; i < len; ++i) bytes[i] = static_cast<std::uint8_t>(seed + i * 7 + i / 251);
  return bytes;
}

base::UniqueFd Listen(const std::string& path) {
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  EXPECT_EQ(::bind(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << path;
  EXPECT_EQ(::listen(fd.Get(), 256), 0);
  return fd;
}

base::UniqueFd Connect(const std::string& path) {
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  EXPECT_EQ(::connect(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << path;
  return fd;
}

void WriteAll(int fd, std::span<const std::uint8_t> bytes) {
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
}

// Reads what is there without waiting (empty at EOF or when nothing is there).
std::vector<std::uint8_t> ReadNow(int fd, std::size_t max = 1 << 20) {
  std::vector<std::uint8_t> bytes(max);
  const ssize_t n = ::recv(fd, bytes.data(), max, MSG_DONTWAIT);
  bytes.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return bytes;
}

bool AtEof(int fd) {
  char c;
  return ::recv(fd, &c, 1, MSG_DONTWAIT) == 0;
}

// A vsock device behind the real MMIO transport, driven by the fake guest driver, its host
// side real Unix sockets in a fresh temporary directory.
class VsockDeviceTest : public DeviceHarness<VsockDevice> {
 protected:
  VsockDeviceTest()
      : DeviceHarness({.memory_size = kMemSize,
                       .queue_size = kQueueSize,
                       .queues = {0x1000, 0x6000, 0xb000},
                       .buffers = 0x20000}),
        guest_(memory_, rx_, tx_, ev_, alloc_) {
    char dir[] = "/tmp/ember_vsock_XXXXXX";
    EXPECT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    uds_ = dir_ + "/v.sock";
  }
  ~VsockDeviceTest() override { std::filesystem::remove_all(dir_); }

  VsockConfig Config() {
    VsockConfig config;
    config.vsock_id = "vsock0";
    config.guest_cid = kCid;
    config.uds_path = uds_;
    config.queue_size = kQueueSize;
    return config;
  }

  absl::StatusOr<std::unique_ptr<VsockDevice>> Create() {
    return VsockDevice::Create(Config(), metrics_);
  }
  void Start() {
    ASSERT_NO_FATAL_FAILURE(AttachDevice(Create()));
    guest_.AddSplitRxBuffers(rx_count_, rx_layout_);
    guest_.AddEventBuffers(1);
    Probe(kFeatures);
  }

  // The guest sends one packet and notifies TX.
  void GuestSend(const Header& h, std::span<const std::uint8_t> payload = {}) {
    guest_.ReapTx();  // the driver recycles sent buffers, as Linux does
    guest_.Send(h, payload);
    Kick(kTxQueue);
  }
  // Keeps the guest's RX ring stocked and collects every packet the device sends.
  std::vector<VsockPacket> Drain() {
    ServeUntilIdle();
    std::vector<VsockPacket> packets;
    while (auto p = guest_.PopRx()) packets.push_back(*p);
    if (!packets.empty()) {
      guest_.AddSplitRxBuffers(packets.size(), rx_layout_);
      Kick(kRxQueue);
      ServeUntilIdle();
      auto more = Drain();
      packets.insert(packets.end(), more.begin(), more.end());
    }
    return packets;
  }
  std::optional<VsockPacket> OnePacket() {
    auto packets = Drain();
    EXPECT_EQ(packets.size(), 1u);
    if (packets.empty()) return std::nullopt;
    return packets[0];
  }

  // Host process connects to uds_path for guest port `port`; the guest accepts. Returns the
  // host stream (after "OK <port>\n") and the host-side port.
  std::pair<base::UniqueFd, std::uint32_t> HostInitiated(std::uint32_t port) {
    base::UniqueFd host = Connect(uds_);
    WriteAll(host.Get(), Bytes("CONNECT " + std::to_string(port) + "\n"));
    auto request = OnePacket();
    EXPECT_TRUE(request.has_value());
    if (!request) return {std::move(host), 0};
    EXPECT_EQ(request->header.op, static_cast<std::uint16_t>(Op::kRequest));
    EXPECT_EQ(request->header.dst_port, port);
    EXPECT_EQ(request->header.dst_cid, kCid);
    const std::uint32_t host_port = request->header.src_port;
    GuestSend(GuestHeader(Op::kResponse, port, host_port));
    const std::string ok = "OK " + std::to_string(host_port) + "\n";
    EXPECT_EQ(ReadNow(host.Get(), ok.size()), Bytes(ok));
    return {std::move(host), host_port};
  }

  // The guest connects from `guest_port` to host port `port`, where `listener` listens.
  base::UniqueFd GuestInitiated(int listener, std::uint32_t guest_port, std::uint32_t port) {
    GuestSend(GuestHeader(Op::kRequest, guest_port, port));
    auto response = OnePacket();
    EXPECT_TRUE(response.has_value());
    if (response) {
      EXPECT_EQ(response->header.op, static_cast<std::uint16_t>(Op::kResponse));
      EXPECT_EQ(response->header.src_port, port);
      EXPECT_EQ(response->header.dst_port, guest_port);
      EXPECT_EQ(response->header.buf_alloc, kConnBufferSize);
    }
    return base::UniqueFd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  }

  // The RX buffers Start posts, and Drain tops up: how many, and the descriptor sizes of
  // each chain (header included).
  std::size_t rx_count_ = 64;
  std::vector<std::uint32_t> rx_layout_ = {4096};
  std::string dir_;
  std::string uds_;
  FakeDriverQueue& rx_ = queue(kRxQueue);
  FakeDriverQueue& tx_ = queue(kTxQueue);
  FakeDriverQueue& ev_ = queue(kEventQueue);
  FakeVsockDriver guest_;
};

TEST(VsockPacket, HeaderLayoutMatchesTheKernel) {
  EXPECT_EQ(kHeaderSize, kUapiVsockHdrSize);
  Header h;
  h.len = 0x11223344;
  h.op = 0x5566;
  h.fwd_cnt = 0x778899aa;
  const auto raw = h.Encode();
  std::uint32_t len;
  std::uint16_t op;
  std::uint32_t fwd;
  std::memcpy(&len, raw.data() + kUapiVsockHdrLenOffset, 4);
  std::memcpy(&op, raw.data() + kUapiVsockHdrOpOffset, 2);
  std::memcpy(&fwd, raw.data() + kUapiVsockHdrFwdCntOffset, 4);
  EXPECT_EQ(len, h.len);
  EXPECT_EQ(op, h.op);
  EXPECT_EQ(fwd, h.fwd_cnt);
  EXPECT_EQ(Header::Decode(raw).fwd_cnt, h.fwd_cnt);
  EXPECT_EQ(kTypeStream, kUapiVsockTypeStream);
  EXPECT_EQ(static_cast<unsigned>(Op::kRequest), kUapiVsockOpRequest);
  EXPECT_EQ(static_cast<unsigned>(Op::kCreditRequest), kUapiVsockOpCreditRequest);
  EXPECT_EQ(kShutdownRcv, kUapiVsockShutdownRcv);
  EXPECT_EQ(kShutdownSend, kUapiVsockShutdownSend);
  EXPECT_EQ(kEventTransportReset, kUapiVsockEventTransportReset);
  EXPECT_EQ(kDeviceIdVsock, kUapiVirtioIdVsock);
}

TEST_F(VsockDeviceTest, ConfigSpaceHoldsTheGuestCid) {
  Start();
  EXPECT_EQ(driver_->Read32(mmio::kDeviceId), kDeviceIdVsock);
  EXPECT_EQ(driver_->Read32(mmio::kConfig), kCid);
  EXPECT_EQ(driver_->Read32(mmio::kConfig + 4), 0u);
}

TEST_F(VsockDeviceTest, ReservedGuestCidIsAConfigError) {
  VsockConfig config = Config();
  config.guest_cid = 2;
  auto device = VsockDevice::Create(config, metrics_);
  ASSERT_FALSE(device.ok());
  EXPECT_NE(device.status().message().find("guest_cid 2"), std::string::npos);
}

TEST_F(VsockDeviceTest, ExistingUdsPathIsAConfigError) {
  base::UniqueFd squatter = Listen(uds_);
  auto device = VsockDevice::Create(Config(), metrics_);
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(VsockDeviceTest, MissingUdsDirectoryIsAConfigError) {
  VsockConfig config = Config();
  config.uds_path = dir_ + "/no/such/dir/v.sock";
  auto device = VsockDevice::Create(config, metrics_);
  ASSERT_FALSE(device.ok());
  EXPECT_NE(device.status().message().find("bind"), std::string::npos) << device.status();
}

TEST_F(VsockDeviceTest, HostConnectGetsOkWithTheHostSidePortOnceTheGuestAccepts) {
  Start();
  auto [host, host_port] = HostInitiated(52);
  EXPECT_GE(host_port, 1u << 30);
  EXPECT_EQ(device_->connection_count(), 1u);
}

TEST_F(VsockDeviceTest, HostToGuestAndGuestToHostDataOnAHostInitiatedStream) {
  Start();
  auto [host, host_port] = HostInitiated(52);
  WriteAll(host.Get(), Bytes("ping"));
  auto data = OnePacket();
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(data->header.op, static_cast<std::uint16_t>(Op::kRw));
  EXPECT_EQ(data->payload, Bytes("ping"));
  GuestSend(GuestHeader(Op::kRw, 52, host_port, 4), Bytes("pong"));
  EXPECT_EQ(ReadNow(host.Get()), Bytes("pong"));
}

TEST_F(VsockDeviceTest, BytesAfterTheConnectLineAreStreamData) {
  Start();
  base::UniqueFd host = Connect(uds_);
  WriteAll(host.Get(), Bytes("CONN"));
  EXPECT_TRUE(Drain().empty());
  WriteAll(host.Get(), Bytes("ECT 52\nearly"));
  auto request = OnePacket();
  ASSERT_TRUE(request.has_value());
  GuestSend(GuestHeader(Op::kResponse, 52, request->header.src_port));
  EXPECT_EQ(ReadNow(host.Get(), 64).size(), 3 + std::to_string(request->header.src_port).size() + 1);
  auto data = OnePacket();
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(data->payload, Bytes("early"));
}

TEST_F(VsockDeviceTest, MalformedConnectLineClosesTheHostStream) {
  Start();
  base::UniqueFd host = Connect(uds_);
  WriteAll(host.Get(), Bytes("HELLO 52\n"));
  EXPECT_TRUE(Drain().empty());
  EXPECT_TRUE(AtEof(host.Get()));
  EXPECT_EQ(Metric("handshake_fails"), 1u);
}

TEST_F(VsockDeviceTest, GuestRefusingAHostConnectionClosesTheHostStream) {
  Start();
  base::UniqueFd host = Connect(uds_);
  WriteAll(host.Get(), Bytes("CONNECT 99\n"));
  auto request = OnePacket();
  ASSERT_TRUE(request.has_value());
  GuestSend(GuestHeader(Op::kRst, 99, request->header.src_port));
  EXPECT_TRUE(AtEof(host.Get()));
  EXPECT_EQ(device_->connection_count(), 0u);
}

TEST_F(VsockDeviceTest, GuestConnectReachesTheListenerAtPathUnderscorePort) {
  Start();
  base::UniqueFd listener = Listen(uds_ + "_1234");
  base::UniqueFd host = GuestInitiated(listener.Get(), 5000, 1234);
  ASSERT_TRUE(host.Valid());
  GuestSend(GuestHeader(Op::kRw, 5000, 1234), Bytes("marker"));
  EXPECT_EQ(ReadNow(host.Get()), Bytes("marker"));
  WriteAll(host.Get(), Bytes("reply"));
  auto data = OnePacket();
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(data->header.dst_port, 5000u);
  EXPECT_EQ(data->payload, Bytes("reply"));
}

TEST_F(VsockDeviceTest, GuestConnectToAPortNobodyListensOnGetsRst) {
  Start();
  GuestSend(GuestHeader(Op::kRequest, 5000, 4321));
  auto rst = OnePacket();
  ASSERT_TRUE(rst.has_value());
  EXPECT_EQ(rst->header.op, static_cast<std::uint16_t>(Op::kRst));
  EXPECT_EQ(rst->header.src_port, 4321u);
  EXPECT_EQ(rst->header.dst_port, 5000u);
  EXPECT_EQ(Metric("host_connect_fails"), 1u);
}

// Whoever can write uds_path's directory may plant a symlink at <uds_path>_<port>: the
// guest's connection must not follow it to another socket on the host (issue 21).
TEST_F(VsockDeviceTest, GuestConnectRefusesASymlinkAtPathUnderscorePortToAnotherListener) {
  Start();
  const std::string elsewhere = dir_ + "/elsewhere.sock";
  base::UniqueFd other = Listen(elsewhere);
  ASSERT_EQ(::symlink("elsewhere.sock", (uds_ + "_1234").c_str()), 0);
  GuestSend(GuestHeader(Op::kRequest, 5000, 1234));
  auto rst = OnePacket();
  ASSERT_TRUE(rst.has_value());
  EXPECT_EQ(rst->header.op, static_cast<std::uint16_t>(Op::kRst));
  EXPECT_EQ(Metric("host_connect_fails"), 1u);
  pollfd pending{other.Get(), POLLIN, 0};
  EXPECT_EQ(::poll(&pending, 1, 0), 0)
      << "the guest reached " << elsewhere << " through the symlink";
}

TEST_F(VsockDeviceTest, DeviceNeverSendsMoreThanTheGuestsCredit) {
  Start();
  base::UniqueFd listener = Listen(uds_ + "_7");
  Header request = GuestHeader(Op::kRequest, 70, 7);
  request.buf_alloc = 1000;
  GuestSend(request);
  ASSERT_EQ(Drain().size(), 1u);
  base::UniqueFd host(::accept4(listener.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  const auto sent = Pattern(5000, 1);
  WriteAll(host.Get(), sent);
  auto packets = Drain();
  std::vector<std::uint8_t> got;
  bool asked = false;
  for (const auto& p : packets) {
    if (p.header.op == static_cast<std::uint16_t>(Op::kRw)) got.insert(got.end(), p.payload.begin(), p.payload.end());
    if (p.header.op == static_cast<std::uint16_t>(Op::kCreditRequest)) asked = true;
  }
  EXPECT_EQ(got.size(), 1000u);
  EXPECT_TRUE(asked) << "no CREDIT_REQUEST when the credit ran out";
  // The guest reads it all and says so: 1000 more bytes may flow.
  Header update = GuestHeader(Op::kCreditUpdate, 70, 7, 1000);
  update.buf_alloc = 1000;
  GuestSend(update);
  packets = Drain();
  std::size_t more = 0;
  for (const auto& p : packets) more += p.payload.size();
  EXPECT_EQ(more, 1000u);
  got.insert(got.end(), packets[0].payload.begin(), packets[0].payload.end());
  EXPECT_TRUE(std::equal(got.begin(), got.end(), sent.begin()));
}

TEST_F(VsockDeviceTest, CreditRequestIsAnsweredWithCreditUpdate) {
  Start();
  base::UniqueFd listener = Listen(uds_ + "_7");
  base::UniqueFd host = GuestInitiated(listener.Get(), 70, 7);
  GuestSend(GuestHeader(Op::kCreditRequest, 70, 7));
  auto update = OnePacket();
  ASSERT_TRUE(update.has_value());
  EXPECT_EQ(update->header.op, static_cast<std::uint16_t>(Op::kCreditUpdate));
  EXPECT_EQ(update->header.buf_alloc, kConnBufferSize);
  EXPECT_EQ(update->header.fwd_cnt, 0u);
}

TEST_F(VsockDeviceTest, ForwardingGuestDataSendsCreditUpdatesBeforeTheGuestRunsOut) {
  Start();
  base::UniqueFd listener = Listen(uds_ + "_7");
  base::UniqueFd host = GuestInitiated(listener.Get(), 70, 7);
  const auto chunk = Pattern(32 * 1024, 3);
  std::uint32_t sent = 0;
  std::uint32_t heard_fwd = 0;  // the fwd_cnt of the last CREDIT_UPDATE
  int updates = 0;
  for (int i = 0; i < 16; ++i) {
    ASSERT_LE(sent + chunk.size() - heard_fwd, kConnBufferSize)
        << "the guest ran out of credit before chunk " << i;
    GuestSend(GuestHeader(Op::kRw, 70, 7), chunk);
    sent += static_cast<std::uint32_t>(chunk.size());
    std::size_t read = 0;
    while (read < chunk.size()) read += ReadNow(host.Get(), chunk.size() - read).size();
    for (const auto& p : Drain()) {
      if (p.header.op != static_cast<std::uint16_t>(Op::kCreditUpdate)) continue;
      heard_fwd = p.header.fwd_cnt;
      ++updates;
    }
  }
  EXPECT_EQ(heard_fwd % chunk.size(), 0u);
  // 512 KiB through a 256 KiB buffer: an update each time the guest is down to its last
  // 64 KiB, not one per packet.
  EXPECT_EQ(updates, 2);
}

TEST_F(VsockDeviceTest, GuestOverrunningItsCreditIsReset) {
  Start();
  base::UniqueFd listener = Listen(uds_ + "_7");
  base::UniqueFd host = GuestInitiated(listener.Get(), 70, 7);  // never reads
  const auto chunk = Pattern(kMaxPayload, 5);
  bool reset = false;
  for (int i = 0; i < 64 && !reset; ++i) {
    GuestSend(GuestHeader(Op::kRw, 70, 7), chunk);
    for (const auto& p : Drain()) reset |= p.header.op == static_cast<std::uint16_t>(Op::kRst);
  }
  EXPECT_TRUE(reset);
  EXPECT_EQ(Metric("credit_violations"), 1u);
  EXPECT_EQ(device_->connection_count(), 0u);
}

TEST_F(VsockDeviceTest, SlowHostReaderHoldsUpOnlyItsOwnConnection) {
  Start();
  base::UniqueFd listener = Listen(uds_ + "_7");
  base::UniqueFd slow = GuestInitiated(listener.Get(), 70, 7);
  base::UniqueFd fast = GuestInitiated(listener.Get(), 71, 7);
  // The guest fills the slow connection's whole credit; the host does not read it.
  std::vector<std::uint8_t> sent;
  for (std::uint32_t i = 0; i < kConnBufferSize / kMaxPayload; ++i) {
    const auto chunk = Pattern(kMaxPayload, static_cast<std::uint8_t>(i));
    sent.insert(sent.end(), chunk.begin(), chunk.end());
    GuestSend(GuestHeader(Op::kRw, 70, 7), chunk);
  }
  // The guest hears of what the socket took at once when its credit runs low.
  std::uint32_t fwd = 0;
  for (const auto& p : Drain()) {
    if (p.header.op == static_cast<std::uint16_t>(Op::kCreditUpdate)) fwd = p.header.fwd_cnt;
  }
  // The other connection still flows both ways.
  GuestSend(GuestHeader(Op::kRw, 71, 7), Bytes("fast"));
  EXPECT_EQ(ReadNow(fast.Get()), Bytes("fast"));
  WriteAll(fast.Get(), Bytes("back"));
  auto packets = Drain();
  ASSERT_FALSE(packets.empty());
  EXPECT_EQ(packets.back().payload, Bytes("back"));
  // Now the slow reader reads: everything arrives, in order, and credit is returned.
  std::vector<std::uint8_t> got;
  for (int i = 0; i < 1000 && got.size() < sent.size(); ++i) {
    auto part = ReadNow(slow.Get());
    got.insert(got.end(), part.begin(), part.end());
    for (const auto& p : Drain()) {
      if (p.header.op == static_cast<std::uint16_t>(Op::kCreditUpdate)) fwd = p.header.fwd_cnt;
    }
  }
  EXPECT_EQ(got, sent);
  EXPECT_GT(fwd, 0u);
  EXPECT_EQ(Metric("credit_violations"), 0u);
}

TEST_F(VsockDeviceTest, GuestDataQueuedBehindASlowHostReaderArrivesWholeAndInOrder) {
  Start();
  base::UniqueFd listener = Listen(uds_ + "_7");
  base::UniqueFd host = GuestInitiated(listener.Get(), 70, 7);
  // The guest sends 1 MiB as fast as its credit allows; the host reads 16 KiB at a time, so
  // the device's socket writes come up short and the rest queues (and wraps) in its buffer.
  constexpr std::size_t kTotal = 1 << 20;
  std::vector<std::uint8_t> sent;
  std::vector<std::uint8_t> got;
  std::uint32_t heard_fwd = 0;
  for (int i = 0; i < 5000 && got.size() < kTotal; ++i) {
    const std::uint32_t credit =
        kConnBufferSize - (static_cast<std::uint32_t>(sent.size()) - heard_fwd);
    if (credit > 0 && sent.size() < kTotal) {
      const std::size_t len = std::min<std::size_t>({credit, kMaxPayload, kTotal - sent.size()});
      const auto chunk = Pattern(len, static_cast<std::uint8_t>(i));
      GuestSend(GuestHeader(Op::kRw, 70, 7, 0), chunk);
      sent.insert(sent.end(), chunk.begin(), chunk.end());
    }
    const auto part = ReadNow(host.Get(), 16 * 1024);
    got.insert(got.end(), part.begin(), part.end());
    for (const auto& p : Drain()) {
      if (p.header.op == static_cast<std::uint16_t>(Op::kRst)) FAIL() << "connection reset";
      if (p.header.op == static_cast<std::uint16_t>(Op::kCreditUpdate)) heard_fwd = p.header.fwd_cnt;
    }
  }
  EXPECT_EQ(got.size(), kTotal);
  EXPECT_TRUE(got == sent) << "the host stream differs from what the guest sent";
  EXPECT_EQ(Metric("credit_violations"), 0u);
}

TEST_F(VsockDeviceTest, GuestFullShutdownIsAnsweredWithRstAndTheHostSeesEof) {
  Start();
  base::UniqueFd listener = Listen(uds_ + "_7");
  base::UniqueFd host = GuestInitiated(listener.Get(), 70, 7);
  GuestSend(GuestHeader(Op::kRw, 70, 7), Bytes("last words"));
  GuestSend(GuestHeader(Op::kShutdown, 70, 7, 0, kShutdownRcv | kShutdownSend));
  auto rst = OnePacket();
  ASSERT_TRUE(rst.has_value());
  EXPECT_EQ(rst->header.op, static_cast<std::uint16_t>(Op::kRst));
  EXPECT_EQ(ReadNow(host.Get()), Bytes("last words"));
  EXPECT_TRUE(AtEof(host.Get()));
  EXPECT_EQ(device_->connection_count(), 0u);
}

TEST_F(VsockDeviceTest, GuestSendShutdownHalfClosesTheHostStream) {
  Start();
  base::UniqueFd listener = Listen(uds_ + "_7");
  base::UniqueFd host = GuestInitiated(listener.Get(), 70, 7);
  GuestSend(GuestHeader(Op::kShutdown, 70, 7, 0, kShutdownSend));
  EXPECT_TRUE(Drain().empty());
  EXPECT_TRUE(AtEof(host.Get()));
  WriteAll(host.Get(), Bytes("still here"));
  auto data = OnePacket();
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(data->payload, Bytes("still here"));
}

TEST_F(VsockDeviceTest, HostCloseSendsShutdownBothWaysAndGuestRstEndsIt) {
  Start();
  auto [host, host_port] = HostInitiated(52);
  WriteAll(host.Get(), Bytes("bye"));
  host.Reset();
  auto packets = Drain();
  ASSERT_EQ(packets.size(), 2u);
  EXPECT_EQ(packets[0].payload, Bytes("bye"));
  EXPECT_EQ(packets[1].header.op, static_cast<std::uint16_t>(Op::kShutdown));
  EXPECT_EQ(packets[1].header.flags, kShutdownRcv | kShutdownSend);
  EXPECT_EQ(device_->connection_count(), 1u);
  GuestSend(GuestHeader(Op::kRst, 52, host_port));
  EXPECT_EQ(device_->connection_count(), 0u);
}

TEST_F(VsockDeviceTest, HostHalfCloseSendsShutdownSendOnly) {
  Start();
  auto [host, host_port] = HostInitiated(52);
  ::shutdown(host.Get(), SHUT_WR);
  auto shutdown = OnePacket();
  ASSERT_TRUE(shutdown.has_value());
  EXPECT_EQ(shutdown->header.op, static_cast<std::uint16_t>(Op::kShutdown));
  EXPECT_EQ(shutdown->header.flags, kShutdownSend);
  GuestSend(GuestHeader(Op::kRw, 52, host_port), Bytes("answer"));
  EXPECT_EQ(ReadNow(host.Get()), Bytes("answer"));
}

TEST_F(VsockDeviceTest, GuestRstClosesTheHostStream) {
  Start();
  auto [host, host_port] = HostInitiated(52);
  GuestSend(GuestHeader(Op::kRst, 52, host_port));
  EXPECT_TRUE(AtEof(host.Get()));
  EXPECT_TRUE(Drain().empty()) << "an RST is never answered";
}

TEST_F(VsockDeviceTest, ManyConcurrentConnectionsKeepTheirDataApart) {
  Start();
  base::UniqueFd listener = Listen(uds_ + "_9");
  constexpr std::uint32_t kCount = 100;
  std::vector<base::UniqueFd> hosts;
  for (std::uint32_t i = 0; i < kCount; ++i) {
    hosts.push_back(GuestInitiated(listener.Get(), 1000 + i, 9));
  }
  for (std::uint32_t i = 0; i < kCount; ++i) {
    GuestSend(GuestHeader(Op::kRw, 1000 + i, 9), Bytes("to " + std::to_string(i)));
    WriteAll(hosts[i].Get(), Bytes("from " + std::to_string(i)));
  }
  for (std::uint32_t i = 0; i < kCount; ++i) {
    EXPECT_EQ(ReadNow(hosts[i].Get()), Bytes("to " + std::to_string(i)));
  }
  auto packets = Drain();
  ASSERT_EQ(packets.size(), kCount);
  for (const auto& p : packets) {
    EXPECT_EQ(p.payload, Bytes("from " + std::to_string(p.header.dst_port - 1000)));
  }
  EXPECT_EQ(device_->connection_count(), kCount);
}

TEST_F(VsockDeviceTest, PacketsForAnUnknownConnectionGetRst) {
  Start();
  GuestSend(GuestHeader(Op::kRw, 70, 7), Bytes("stray"));
  auto rst = OnePacket();
  ASSERT_TRUE(rst.has_value());
  EXPECT_EQ(rst->header.op, static_cast<std::uint16_t>(Op::kRst));
  EXPECT_EQ(Metric("malformed_packets"), 0u);
}

// Malformed guest packets: counted, answered with RST where the guest could be waiting,
// never fatal; the device keeps serving.
class VsockMalformedTest : public VsockDeviceTest {
 protected:
  void ExpectCounted(bool rst) {
    auto packets = Drain();
    EXPECT_EQ(Metric("malformed_packets"), 1u);
    EXPECT_EQ(packets.size(), rst ? 1u : 0u);
    if (rst && !packets.empty()) {
      EXPECT_EQ(packets[0].header.op, static_cast<std::uint16_t>(Op::kRst));
    }
    EXPECT_EQ(transport_->status() & kStatusNeedsReset, 0u);
    EXPECT_EQ(guest_.ReapTx(), 1u);
    // Still serving.
    GuestSend(GuestHeader(Op::kRequest, 5000, 4321));
    EXPECT_EQ(Drain().size(), 1u);
  }
};

TEST_F(VsockMalformedTest, ShorterThanAHeaderIsDropped) {
  Start();
  guest_.SendRaw(Pattern(20, 1));
  Kick(kTxQueue);
  ExpectCounted(false);
}

TEST_F(VsockMalformedTest, DeviceWritableTxBufferIsDropped) {
  Start();
  const auto raw = GuestHeader(Op::kRequest, 1, 2).Encode();
  guest_.SendRaw(raw, /*writable=*/true);
  Kick(kTxQueue);
  ExpectCounted(false);
}

TEST_F(VsockMalformedTest, WrongSourceCidIsDroppedWithoutAnswer) {
  Start();
  Header h = GuestHeader(Op::kRequest, 5000, 1234);
  h.src_cid = 7;
  GuestSend(h);
  ExpectCounted(false);
}

TEST_F(VsockMalformedTest, WrongDestinationCidIsReset) {
  Start();
  Header h = GuestHeader(Op::kRequest, 5000, 1234);
  h.dst_cid = 9;
  GuestSend(h);
  ExpectCounted(true);
}

TEST_F(VsockMalformedTest, UnknownTypeIsReset) {
  Start();
  Header h = GuestHeader(Op::kRequest, 5000, 1234);
  h.type = 2;  // SEQPACKET, not negotiated
  GuestSend(h);
  ExpectCounted(true);
}

TEST_F(VsockMalformedTest, UnknownOpIsReset) {
  Start();
  Header h = GuestHeader(Op::kRequest, 5000, 1234);
  h.op = 42;
  GuestSend(h);
  ExpectCounted(true);
}

TEST_F(VsockMalformedTest, LengthBeyondTheBufferIsReset) {
  Start();
  Header h = GuestHeader(Op::kRw, 5000, 1234);
  h.len = 100;
  guest_.Send(h, Bytes("short"), /*keep_len=*/true);
  Kick(kTxQueue);
  ExpectCounted(true);
}

TEST_F(VsockMalformedTest, PayloadOnAControlPacketIsReset) {
  Start();
  GuestSend(GuestHeader(Op::kCreditUpdate, 5000, 1234), Bytes("junk"));
  ExpectCounted(true);
}

TEST_F(VsockMalformedTest, MalformedPacketOnALiveConnectionResetsIt) {
  Start();
  base::UniqueFd listener = Listen(uds_ + "_7");
  base::UniqueFd host = GuestInitiated(listener.Get(), 70, 7);
  Header h = GuestHeader(Op::kRw, 70, 7);
  h.len = 9999;
  guest_.Send(h, Bytes("x"), /*keep_len=*/true);
  Kick(kTxQueue);
  auto rst = OnePacket();
  ASSERT_TRUE(rst.has_value());
  EXPECT_EQ(rst->header.op, static_cast<std::uint16_t>(Op::kRst));
  EXPECT_TRUE(AtEof(host.Get()));
}

TEST_F(VsockDeviceTest, HostileChainMarksTheDeviceNeedsReset) {
  Start();
  tx_.WriteDescriptor(0, kMemSize - 16, 64, 0, 0);
  tx_.Publish(0);
  Kick(kTxQueue);
  EXPECT_NE(transport_->status() & kStatusNeedsReset, 0u);
  EXPECT_EQ(Metric("invalid_chains"), 1u);
}

TEST_F(VsockDeviceTest, ResetAllConnectionsClosesHostStreamsAndSendsTransportReset) {
  Start();
  auto [host, host_port] = HostInitiated(52);
  device_->ResetAllConnections();
  EXPECT_TRUE(AtEof(host.Get()));
  EXPECT_EQ(device_->connection_count(), 0u);
  EXPECT_EQ(guest_.PopEvent(), std::optional<std::uint32_t>(kEventTransportReset));
  EXPECT_NE(driver_->Read32(mmio::kInterruptStatus) & kInterruptUsedBuffer, 0u);
  // New connections work afterwards.
  auto [again, port] = HostInitiated(53);
  EXPECT_TRUE(again.Valid());
}

TEST_F(VsockDeviceTest, TransportResetWaitsForAnEventBuffer) {
  Start();
  device_->ResetAllConnections();
  EXPECT_EQ(guest_.PopEvent(), std::optional<std::uint32_t>(kEventTransportReset));
  device_->ResetAllConnections();
  EXPECT_FALSE(guest_.PopEvent().has_value());
  guest_.AddEventBuffers(1);
  Kick(kEventQueue);
  EXPECT_EQ(guest_.PopEvent(), std::optional<std::uint32_t>(kEventTransportReset));
}

TEST_F(VsockDeviceTest, HostConnectionsBeforeTheDriverIsReadyWaitForIt) {
  ASSERT_NO_FATAL_FAILURE(AttachDevice(Create()));
  base::UniqueFd host = Connect(uds_);
  WriteAll(host.Get(), Bytes("CONNECT 52\n"));
  ServeUntilIdle();
  guest_.AddRxBuffers(4, 4096);
  ASSERT_TRUE(driver_->Initialize(kFeatures, QueueLayouts()).ok());
  auto packets = Drain();
  ASSERT_EQ(packets.size(), 1u);
  EXPECT_EQ(packets[0].header.op, static_cast<std::uint16_t>(Op::kRequest));
}

TEST_F(VsockDeviceTest, SnapshotRestoreTellsTheGuestItsConnectionsAreGone) {
  Start();
  auto [host, host_port] = HostInitiated(52);
  auto saved = transport_->SaveState();
  ASSERT_TRUE(saved.ok()) << saved.status();
  DetachDevice();  // the old VMM exits: its sockets close and its listener goes
  EXPECT_TRUE(AtEof(host.Get()));
  const absl::Status restored = RestoreDevice(*saved, [&] { return Create(); });
  ASSERT_TRUE(restored.ok()) << restored;
  EXPECT_EQ(guest_.PopEvent(), std::optional<std::uint32_t>(kEventTransportReset));
  // The restored device serves new connections on the rings as they stood.
  auto [again, port] = HostInitiated(53);
  EXPECT_TRUE(again.Valid());
}

// Payload of the RW packets among `packets`, in order.
std::vector<std::uint8_t> StreamOf(const std::vector<VsockPacket>& packets) {
  std::vector<std::uint8_t> bytes;
  for (const auto& p : packets) {
    if (p.header.op == static_cast<std::uint16_t>(Op::kRw)) {
      bytes.insert(bytes.end(), p.payload.begin(), p.payload.end());
    }
  }
  return bytes;
}

constexpr std::uint32_t kRxPayload = 4096 - kHeaderSize;  // what one default RX buffer holds

TEST_F(VsockDeviceTest, HostDataFillsEveryRxBufferItTakesInOrder) {
  Start();
  auto [host, host_port] = HostInitiated(52);
  const auto sent = Pattern(40000, 9);
  WriteAll(host.Get(), sent);
  const auto packets = Drain();
  ASSERT_FALSE(packets.empty());
  for (std::size_t i = 0; i + 1 < packets.size(); ++i) {
    EXPECT_EQ(packets[i].payload.size(), kRxPayload) << "packet " << i << " is not full";
    EXPECT_EQ(packets[i].header.len, packets[i].payload.size());
  }
  EXPECT_EQ(StreamOf(packets), sent);
  EXPECT_EQ(Metric("rx_bytes"), sent.size());
}

TEST_F(VsockDeviceTest, RxBuffersAReadDidNotNeedGoBackToTheRing) {
  rx_count_ = 16;
  Start();
  auto [host, host_port] = HostInitiated(52);  // the REQUEST's buffer is replaced
  // Three full buffers and a few bytes: the reads take 1, 2, then 4 buffers at once, of which
  // the last read needs only one; the other three must return to the ring unused.
  std::vector<std::uint8_t> sent = Pattern(3 * kRxPayload + 10, 4);
  WriteAll(host.Get(), sent);
  ServeUntilIdle();
  std::vector<VsockPacket> got;
  while (auto p = guest_.PopRx()) got.push_back(*p);
  ASSERT_EQ(got.size(), 4u);
  // The 12 buffers left must all still be there: fill them exactly, with the guest's credit
  // kept open, and nothing is lost or reordered.
  std::uint32_t fwd = static_cast<std::uint32_t>(StreamOf(got).size());
  GuestSend(GuestHeader(Op::kCreditUpdate, 52, host_port, fwd));
  for (int i = 0; i < 3; ++i) {
    const auto more = Pattern(4 * kRxPayload, static_cast<std::uint8_t>(20 + i));
    WriteAll(host.Get(), more);
    sent.insert(sent.end(), more.begin(), more.end());
    ServeUntilIdle();
    const std::size_t before = got.size();
    while (auto p = guest_.PopRx()) got.push_back(*p);
    for (std::size_t k = before; k < got.size(); ++k) fwd += got[k].header.len;
    GuestSend(GuestHeader(Op::kCreditUpdate, 52, host_port, fwd));
  }
  EXPECT_EQ(got.size(), 16u);
  EXPECT_EQ(StreamOf(got), sent);
  // The ring is empty now; the next bytes wait for a buffer.
  WriteAll(host.Get(), Bytes("x"));
  ServeUntilIdle();
  EXPECT_FALSE(guest_.PopRx().has_value());
  guest_.AddRxBuffers(1, 4096);
  Kick(kRxQueue);
  auto last = guest_.PopRx();
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->payload, Bytes("x"));
}

TEST_F(VsockDeviceTest, RxChainsOfSeveralDescriptorsCarryHeaderAndPayload) {
  // The header spans the first two descriptors; the payload the rest.
  rx_layout_ = {16, 40, 1000, 3040};
  Start();
  auto [host, host_port] = HostInitiated(52);
  const auto sent = Pattern(20000, 2);
  WriteAll(host.Get(), sent);
  const auto packets = Drain();
  ASSERT_FALSE(packets.empty());
  for (const auto& p : packets) {
    EXPECT_EQ(p.header.op, static_cast<std::uint16_t>(Op::kRw));
    EXPECT_EQ(p.header.dst_port, 52u);
    EXPECT_LE(p.payload.size(), kRxPayload);
  }
  EXPECT_EQ(StreamOf(packets), sent);
}

TEST_F(VsockDeviceTest, HostileRxChainInTheMiddleOfABatchedReadMarksTheDeviceNeedsReset) {
  rx_count_ = 1;
  Start();
  auto [host, host_port] = HostInitiated(52);  // leaves one RX buffer posted
  guest_.AddRxBuffers(1, 4096);
  // The third chain is device-readable, which an RX buffer must not be.
  const testing::FakeBuffer readable{alloc_.Alloc(4096), 4096, false};
  rx_.AddChain(std::span(&readable, 1));
  Kick(kRxQueue);
  WriteAll(host.Get(), Pattern(3 * kRxPayload, 1));
  ServeUntilIdle();
  EXPECT_NE(transport_->status() & kStatusNeedsReset, 0u);
  EXPECT_EQ(Metric("invalid_chains"), 1u);
}

TEST_F(VsockDeviceTest, HostDataWaitsWithoutSpinningWhileTheGuestHasNoRxBuffers) {
  Start();
  base::UniqueFd listener = Listen(uds_ + "_7");
  base::UniqueFd host = GuestInitiated(listener.Get(), 70, 7);
  // The guest stops posting RX buffers; the host keeps writing until they are used up.
  std::vector<std::uint8_t> got;
  for (int i = 0; i < 200; ++i) {
    WriteAll(host.Get(), Bytes("x"));
    ServeUntilIdle();
    while (auto p = guest_.PopRx()) got.insert(got.end(), p->payload.begin(), p->payload.end());
  }
  ASSERT_LT(got.size(), 200u) << "the RX ring never ran out";
  WriteAll(host.Get(), Bytes("tail"));
  ServeUntilIdle();  // fails if the device's EventSource stays readable: a busy loop
  EXPECT_FALSE(guest_.PopRx().has_value());
  // Buffers come back: everything arrives, in order.
  auto rest = Drain();
  guest_.AddRxBuffers(8, 4096);
  Kick(kRxQueue);
  auto more = Drain();
  rest.insert(rest.end(), more.begin(), more.end());
  for (const auto& p : rest) got.insert(got.end(), p.payload.begin(), p.payload.end());
  std::vector<std::uint8_t> want(200, 'x');
  for (char c : std::string("tail")) want.push_back(static_cast<std::uint8_t>(c));
  EXPECT_EQ(got, want);
}

TEST_F(VsockDeviceTest, HeaderOnlyRxBufferCarriesACreditUpdateAndTheDataWaitsForTheNext) {
  // Every RX buffer the guest posts holds a packet header and nothing more.
  rx_count_ = 1;
  rx_layout_ = {static_cast<std::uint32_t>(kHeaderSize)};
  Start();
  base::UniqueFd listener = Listen(uds_ + "_7");
  base::UniqueFd host = GuestInitiated(listener.Get(), 70, 7);  // RESPONSE fits; one reposted
  WriteAll(host.Get(), Bytes("data"));
  // The loop settles at once instead of meeting the same buffer on every turn.
  EXPECT_LE(ServeUntilIdle(), 2);
  auto update = guest_.PopRx();
  ASSERT_TRUE(update.has_value()) << "the header-only buffer was not used";
  EXPECT_EQ(update->header.op, static_cast<std::uint16_t>(Op::kCreditUpdate));
  EXPECT_EQ(update->header.dst_port, 70u);
  EXPECT_TRUE(update->payload.empty());
  EXPECT_EQ(Metric("rx_short_buffers"), 1u);
  EXPECT_EQ(transport_->status() & kStatusNeedsReset, 0u);
  // A buffer with room takes the data.
  guest_.AddRxBuffers(1, 4096);
  Kick(kRxQueue);
  auto data = guest_.PopRx();
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(data->header.op, static_cast<std::uint16_t>(Op::kRw));
  EXPECT_EQ(data->payload, Bytes("data"));
  EXPECT_EQ(ServeUntilIdle(), 0);
}

TEST_F(VsockDeviceTest, RequestChurnWithoutRxBuffersKeepsTheRxWaitListBounded) {
  rx_count_ = 0;  // the guest never posts an RX buffer
  Start();
  base::UniqueFd listener = Listen(uds_ + "_7");
  // REQUEST opens a connection whose RESPONSE waits for a buffer; the same REQUEST again is a
  // protocol error that resets it (its RST waits too, in a queue of its own).
  for (int i = 0; i < 2000; ++i) {
    GuestSend(GuestHeader(Op::kRequest, 70, 7));
    GuestSend(GuestHeader(Op::kRequest, 70, 7));
    base::UniqueFd accepted(::accept4(listener.Get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(accepted.Valid()) << "cycle " << i;
  }
  EXPECT_EQ(device_->connection_count(), 0u);
  EXPECT_EQ(device_->rx_wait_count(), 0u);
  EXPECT_EQ(Metric("conns_added"), 2000u);
}

}  // namespace
}  // namespace ember::virtio::vsock
