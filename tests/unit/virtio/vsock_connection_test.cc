// The vsock connection state machine alone: no device, no queues. The host peer is one end
// of a socketpair, guest packets are descriptor chains over plain buffers, and the RX side
// is a recording stand-in for the device's RX ring.
#include "virtio/vsock/connection.h"

#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "virtio/testing/fake_vsock_driver.h"
#include "vmm/base/fd_passing.h"

namespace ember::virtio::vsock {
namespace {

constexpr std::uint64_t kCid = testing::kFakeGuestCid;
constexpr std::uint32_t kHostPort = 7;
constexpr std::uint32_t kGuestPort = 70;
constexpr std::uint32_t kRoom = 4096 - kHeaderSize;  // payload of one of Linux's RX buffers

std::vector<std::uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

// A header the guest sends on the one stream these tests use, advertising `buf_alloc`.
Header StreamHeader(Op op, std::uint32_t buf_alloc = testing::kFakeGuestBufAlloc,
                    std::uint32_t fwd_cnt = 0, std::uint32_t flags = 0) {
  Header h = testing::GuestHeader(op, kGuestPort, kHostPort, fwd_cnt, flags);
  h.buf_alloc = buf_alloc;
  return h;
}

// The device's RX ring, as a connection sees it: records every packet, reads the host
// socket into buffers of kRoom payload bytes.
class RecordingRx final : public RxBuffers {
 public:
  void SendControl(const Header& header) override { packets.push_back(header); }
  Read ReadStream(int fd, const Header& rw, std::uint64_t max_bytes,
                  std::size_t max_buffers) override {
    asked_buffers.push_back(max_buffers);
    asked_bytes.push_back(max_bytes);
    if (header_only) {
      header_only = false;
      return {.no_room = true};
    }
    const std::uint64_t offered = std::min<std::uint64_t>(max_bytes, kRoom * max_buffers);
    std::vector<std::uint8_t> bytes(offered);
    Read read;
    read.n = ::read(fd, bytes.data(), bytes.size());
    read.error = read.n < 0 ? errno : 0;
    if (read.n <= 0) return read;
    bytes.resize(static_cast<std::size_t>(read.n));
    data.insert(data.end(), bytes.begin(), bytes.end());
    read.used = (bytes.size() + kRoom - 1) / kRoom;
    read.filled = bytes.size() == offered;
    for (std::size_t i = 0; i < read.used; ++i) packets.push_back(rw);
    return read;
  }
  [[nodiscard]] bool broken() const override { return false; }

  [[nodiscard]] std::vector<Op> Ops() const {
    std::vector<Op> ops;
    for (const Header& h : packets) ops.push_back(static_cast<Op>(h.op));
    return ops;
  }

  std::vector<Header> packets;
  std::vector<std::uint8_t> data;
  std::vector<std::size_t> asked_buffers;
  std::vector<std::uint64_t> asked_bytes;
  bool header_only = false;  // the next buffer has room for a header only
};

class VsockConnectionTest : public ::testing::Test {
 protected:
  VsockConnectionTest() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    device_end_ = base::UniqueFd(fds[0]);
    host_ = base::UniqueFd(fds[1]);
  }

  // A connection the guest opened with `request`; its RESPONSE already sent.
  Connection Guest(const Header& request = StreamHeader(Op::kRequest)) {
    Connection conn = Connection::FromGuest(std::move(device_end_), request);
    RecordingRx rx;
    EXPECT_TRUE(conn.FillRx(rx).used);
    EXPECT_EQ(rx.Ops(), std::vector<Op>{Op::kResponse});
    return conn;
  }

  // The guest sends `h` (its len set) with `payload`, as a descriptor chain: the header and
  // the payload in two readable descriptors over buffers the fixture keeps.
  Connection::Outcome Deliver(Connection& conn, Header h,
                              const std::vector<std::uint8_t>& payload = {}) {
    h.len = static_cast<std::uint32_t>(payload.size());
    const auto encoded = h.Encode();
    auto& raw = storage_.emplace_back(encoded.begin(), encoded.end());
    auto& body = storage_.emplace_back(payload);
    DescriptorChain& chain = chains_.emplace_back();
    chain.descriptors.push_back({0x1000, static_cast<std::uint32_t>(raw.size()), false, raw});
    if (!body.empty()) {
      chain.descriptors.push_back({0x2000, static_cast<std::uint32_t>(body.size()), false, body});
    }
    chain.readable_count = chain.descriptors.size();
    chain.readable_bytes = raw.size() + body.size();
    return conn.OnGuestPacket(h, chain);
  }

  std::vector<std::uint8_t> HostReads(std::size_t max = 1 << 20) {
    std::vector<std::uint8_t> bytes(max);
    const ssize_t n = ::recv(host_.Get(), bytes.data(), max, MSG_DONTWAIT);
    bytes.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return bytes;
  }

  base::UniqueFd device_end_;
  base::UniqueFd host_;
  std::deque<std::vector<std::uint8_t>> storage_;
  std::deque<DescriptorChain> chains_;
};

TEST_F(VsockConnectionTest, HostInitiatedSendsRequestAndIsEstablishedByTheGuestsResponse) {
  Connection conn = Connection::FromHost(std::move(device_end_), kCid, 1u << 30, kGuestPort);
  EXPECT_EQ(conn.state(), Connection::State::kLocalInit);
  ASSERT_EQ(::send(host_.Get(), "early", 5, 0), 5);
  ASSERT_EQ(conn.OnHostReady(/*readable=*/true), Connection::Verdict::kKeep);
  EXPECT_FALSE(conn.WantsToRead()) << "no reading the host before the guest accepts";
  RecordingRx rx;
  ASSERT_TRUE(conn.FillRx(rx).used);
  ASSERT_EQ(rx.Ops(), std::vector<Op>{Op::kRequest});
  EXPECT_EQ(rx.packets[0].src_port, 1u << 30);
  EXPECT_EQ(rx.packets[0].dst_port, kGuestPort);
  EXPECT_EQ(rx.packets[0].dst_cid, kCid);
  EXPECT_EQ(rx.packets[0].buf_alloc, kConnBufferSize);
  EXPECT_FALSE(conn.HasPendingRx());

  Header response = StreamHeader(Op::kResponse);
  response.dst_port = 1u << 30;
  const auto out = Deliver(conn, response);
  EXPECT_EQ(out.verdict, Connection::Verdict::kKeep);
  EXPECT_EQ(conn.state(), Connection::State::kEstablished);
  EXPECT_EQ(HostReads(), Bytes("OK 1073741824\n"));
  EXPECT_EQ(conn.fwd_cnt(), 0u) << "the OK line is not guest data";
  // The socket raises no new edge for bytes it reported before: they are read now.
  EXPECT_TRUE(conn.WantsToRead());
  EXPECT_TRUE(conn.HasPendingRx());
  ASSERT_TRUE(conn.FillRx(rx).used);
  EXPECT_EQ(rx.data, Bytes("early"));
}

TEST_F(VsockConnectionTest, ResponseOnAnEstablishedStreamIsReset) {
  Connection conn = Guest();
  const Header response = StreamHeader(Op::kResponse);
  EXPECT_EQ(Deliver(conn, response).verdict,
            Connection::Verdict::kReset);
}

TEST_F(VsockConnectionTest, DataBeforeTheGuestAcceptsIsMalformed) {
  Connection conn = Connection::FromHost(std::move(device_end_), kCid, 1u << 30, kGuestPort);
  const Header rw = StreamHeader(Op::kRw);
  const auto out = Deliver(conn, rw, Bytes("early"));
  EXPECT_EQ(out.verdict, Connection::Verdict::kReset);
  EXPECT_EQ(out.fault, Connection::Fault::kMalformed);
  EXPECT_EQ(out.accepted_bytes, 0u);
}

TEST_F(VsockConnectionTest, GuestDataReachesTheHostAndAdvancesFwdCnt) {
  Connection conn = Guest();
  const Header rw = StreamHeader(Op::kRw);
  const auto out = Deliver(conn, rw, Bytes("hello"));
  EXPECT_EQ(out.verdict, Connection::Verdict::kKeep);
  EXPECT_EQ(out.accepted_bytes, 5u);
  EXPECT_EQ(HostReads(), Bytes("hello"));
  EXPECT_EQ(conn.fwd_cnt(), 5u);
  EXPECT_FALSE(conn.HasPendingRx()) << "no CREDIT_UPDATE while the guest has plenty left";
}

TEST_F(VsockConnectionTest, PeerCreditIsBufAllocLessWhatIsInFlight) {
  Connection conn = Guest(StreamHeader(Op::kRequest, /*buf_alloc=*/1000));
  EXPECT_EQ(conn.PeerFreeCredit(), 1000u);
  ::send(host_.Get(), "0123456789", 10, 0);
  ASSERT_EQ(conn.OnHostReady(/*readable=*/true), Connection::Verdict::kKeep);
  RecordingRx rx;
  ASSERT_TRUE(conn.FillRx(rx).used);
  EXPECT_EQ(conn.rx_cnt(), 10u);
  EXPECT_EQ(conn.PeerFreeCredit(), 990u);
  // The guest says it read 4 of them and grew its buffer.
  const Header update = StreamHeader(Op::kCreditUpdate, 2000, 4);
  EXPECT_EQ(Deliver(conn, update).verdict, Connection::Verdict::kKeep);
  EXPECT_EQ(conn.PeerFreeCredit(), 2000u - 6u);
}

TEST_F(VsockConnectionTest, PeerCreditCountsAcrossTheWrapOfTheCounters) {
  // fwd_cnt near 2^32: the guest has forwarded that much before; nothing is in flight.
  Connection conn = Guest(StreamHeader(Op::kRequest, 1000, 0xffffff00u));
  // rx_cnt starts at 0, 0x100 "behind" the guest's counter: 256 bytes appear in flight.
  EXPECT_EQ(conn.PeerFreeCredit(), 1000u - 0x100u);
  const Header update = StreamHeader(Op::kCreditUpdate, 1000, 0);
  EXPECT_EQ(Deliver(conn, update).verdict, Connection::Verdict::kKeep);
  EXPECT_EQ(conn.PeerFreeCredit(), 1000u);
}

TEST_F(VsockConnectionTest, ReadsNoMoreThanTheCreditThenAsksForMoreAndStopsReading) {
  Connection conn = Guest(StreamHeader(Op::kRequest, /*buf_alloc=*/1000));
  std::vector<std::uint8_t> sent(5000, 'x');
  ASSERT_EQ(::send(host_.Get(), sent.data(), sent.size(), 0), 5000);
  ASSERT_EQ(conn.OnHostReady(true), Connection::Verdict::kKeep);
  RecordingRx rx;
  ASSERT_TRUE(conn.FillRx(rx).used);
  EXPECT_EQ(rx.asked_bytes, std::vector<std::uint64_t>{1000});
  EXPECT_EQ(rx.data.size(), 1000u);
  EXPECT_EQ(conn.PeerFreeCredit(), 0u);
  EXPECT_FALSE(conn.WantsToRead()) << "a full guest buffer stops the reads";
  // Next: the CREDIT_REQUEST, once; the data stays until the guest answers.
  ASSERT_TRUE(conn.FillRx(rx).used);
  EXPECT_EQ(rx.Ops().back(), Op::kCreditRequest);
  EXPECT_FALSE(conn.FillRx(rx).used) << "no read without credit";
  EXPECT_FALSE(conn.HasPendingRx());
  const Header update = StreamHeader(Op::kCreditUpdate, 1000, 1000);
  EXPECT_EQ(Deliver(conn, update).verdict, Connection::Verdict::kKeep);
  // The socket raises no new edge for the bytes still in it: the credit alone resumes reading.
  EXPECT_TRUE(conn.HasPendingRx());
  ASSERT_TRUE(conn.FillRx(rx).used);
  EXPECT_EQ(rx.data.size(), 2000u);
}

TEST_F(VsockConnectionTest, CreditRequestIsAnsweredWithTheForwardedCount) {
  Connection conn = Guest();
  const Header rw = StreamHeader(Op::kRw);
  ASSERT_EQ(Deliver(conn, rw, Bytes("abc")).verdict,
            Connection::Verdict::kKeep);
  const Header request = StreamHeader(Op::kCreditRequest);
  ASSERT_EQ(Deliver(conn, request).verdict, Connection::Verdict::kKeep);
  RecordingRx rx;
  ASSERT_TRUE(conn.FillRx(rx).used);
  ASSERT_EQ(rx.Ops(), std::vector<Op>{Op::kCreditUpdate});
  EXPECT_EQ(rx.packets[0].fwd_cnt, 3u);
  EXPECT_EQ(rx.packets[0].buf_alloc, kConnBufferSize);
}

TEST_F(VsockConnectionTest, CreditUpdateIsDueOnceTheGuestIsDownToItsLastPacketOfCredit) {
  Connection conn = Guest();
  const std::vector<std::uint8_t> chunk(kMaxPayload, 'g');
  // 192 KiB forwarded and unannounced leaves the guest exactly 64 KiB: not yet below.
  std::uint32_t sent = 0;
  for (int i = 0; i < 3; ++i) {
    const Header rw = StreamHeader(Op::kRw);
    ASSERT_EQ(Deliver(conn, rw, chunk).verdict, Connection::Verdict::kKeep);
    sent += kMaxPayload;
    std::size_t read = 0;
    for (int k = 0; k < 1000 && read < chunk.size(); ++k) {
      read += HostReads(chunk.size() - read).size();
      ASSERT_EQ(conn.OnHostReady(false), Connection::Verdict::kKeep);  // writes what is queued
    }
    ASSERT_EQ(read, chunk.size());
  }
  EXPECT_EQ(conn.fwd_cnt(), sent);
  EXPECT_FALSE(conn.CreditUpdateDue());
  EXPECT_FALSE(conn.HasPendingRx());
  // One byte more and it is due.
  const Header rw = StreamHeader(Op::kRw);
  ASSERT_EQ(Deliver(conn, rw, Bytes("!")).verdict, Connection::Verdict::kKeep);
  EXPECT_TRUE(conn.CreditUpdateDue());
  RecordingRx rx;
  ASSERT_TRUE(conn.FillRx(rx).used);
  ASSERT_EQ(rx.Ops(), std::vector<Op>{Op::kCreditUpdate});
  EXPECT_EQ(rx.packets[0].fwd_cnt, sent + 1);
  EXPECT_FALSE(conn.CreditUpdateDue()) << "announced";
}

TEST_F(VsockConnectionTest, GuestDataBeyondTheAdvertisedBufferIsACreditOverrun) {
  // The host reads nothing; a small socket buffer makes the device queue the guest's data.
  int small = 4096;
  ASSERT_EQ(::setsockopt(device_end_.Get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  Connection conn = Guest();
  const std::vector<std::uint8_t> chunk(kMaxPayload, 'o');
  std::uint64_t accepted = 0;
  Connection::Outcome out;
  for (int i = 0; i < 16; ++i) {
    const Header rw = StreamHeader(Op::kRw);
    out = Deliver(conn, rw, chunk);
    if (out.verdict != Connection::Verdict::kKeep) break;
    accepted += out.accepted_bytes;
  }
  EXPECT_EQ(out.verdict, Connection::Verdict::kReset);
  EXPECT_EQ(out.fault, Connection::Fault::kCreditOverrun);
  EXPECT_LE(conn.PendingGuestBytes(), kConnBufferSize);
  EXPECT_GE(accepted, kConnBufferSize - kMaxPayload) << "reset before the buffer was full";
  EXPECT_FALSE(conn.TxBufferEmpty()) << "queued bytes wait for the socket";
}

TEST_F(VsockConnectionTest, GuestDataQueuedForASlowReaderIsFlushedWhenTheSocketDrains) {
  int small = 4096;
  ASSERT_EQ(::setsockopt(device_end_.Get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  Connection conn = Guest();
  std::vector<std::uint8_t> sent(3 * kMaxPayload);
  for (std::size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<std::uint8_t>(i * 13);
  for (std::size_t off = 0; off < sent.size(); off += kMaxPayload) {
    const std::vector<std::uint8_t> chunk(sent.begin() + static_cast<std::ptrdiff_t>(off),
                                          sent.begin() + static_cast<std::ptrdiff_t>(off) +
                                              kMaxPayload);
    const Header rw = StreamHeader(Op::kRw);
    ASSERT_EQ(Deliver(conn, rw, chunk).verdict, Connection::Verdict::kKeep);
  }
  EXPECT_GT(conn.PendingGuestBytes(), 0u);
  std::vector<std::uint8_t> got;
  for (int i = 0; i < 10000 && got.size() < sent.size(); ++i) {
    const auto part = HostReads();
    got.insert(got.end(), part.begin(), part.end());
    ASSERT_EQ(conn.OnHostReady(false), Connection::Verdict::kKeep);
  }
  EXPECT_EQ(got, sent);
  EXPECT_EQ(conn.fwd_cnt(), sent.size());
  EXPECT_TRUE(conn.TxBufferEmpty());
}

TEST_F(VsockConnectionTest, ReadFillingEveryBufferDoublesTheNextBatchAndAShortOneShrinksIt) {
  Connection conn = Guest(StreamHeader(Op::kRequest, kConnBufferSize));
  std::vector<std::uint8_t> sent(7 * kRoom, 'd');
  ASSERT_EQ(::send(host_.Get(), sent.data(), sent.size(), 0),
            static_cast<ssize_t>(sent.size()));
  ASSERT_EQ(conn.OnHostReady(true), Connection::Verdict::kKeep);
  RecordingRx rx;
  // 1 buffer, full: 2 next; full: 4 next; 4 buffers for the last 4 kRoom... then short.
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(conn.HasPendingRx());
    ASSERT_TRUE(conn.FillRx(rx).used);
  }
  EXPECT_EQ(rx.asked_buffers, (std::vector<std::size_t>{1, 2, 4}));
  EXPECT_EQ(rx.data.size(), sent.size());
  ASSERT_EQ(::send(host_.Get(), "tail", 4, 0), 4);
  ASSERT_TRUE(conn.FillRx(rx).used);  // still wanted: the last read filled everything
  ASSERT_EQ(conn.OnHostReady(true), Connection::Verdict::kKeep);
  ASSERT_EQ(::send(host_.Get(), "more", 4, 0), 4);
  ASSERT_TRUE(conn.FillRx(rx).used);
  EXPECT_EQ(rx.asked_buffers, (std::vector<std::size_t>{1, 2, 4, 8, 1}));
}

TEST_F(VsockConnectionTest, ShortReadReadsAgainAndOnlyEagainWaitsForTheNextEdge) {
  Connection conn = Guest();
  ASSERT_EQ(::send(host_.Get(), "one", 3, 0), 3);
  ASSERT_EQ(conn.OnHostReady(true), Connection::Verdict::kKeep);
  RecordingRx rx;
  ASSERT_TRUE(conn.FillRx(rx).used);
  ASSERT_TRUE(conn.HasPendingRx()) << "a short read need not have drained the socket";
  EXPECT_FALSE(conn.FillRx(rx).used);
  EXPECT_FALSE(conn.HasPendingRx()) << "EAGAIN: drained";
  // Bytes and the close come in one edge: the short read must not end the reading, or the
  // EOF behind the bytes would never be seen.
  ASSERT_EQ(::send(host_.Get(), "bye", 3, 0), 3);
  host_.Reset();
  ASSERT_EQ(conn.OnHostReady(true, /*peer_closed=*/true), Connection::Verdict::kKeep);
  ASSERT_TRUE(conn.FillRx(rx).used);
  EXPECT_EQ(rx.data, Bytes("onebye"));
  ASSERT_TRUE(conn.HasPendingRx());
  ASSERT_TRUE(conn.FillRx(rx).used);
  EXPECT_EQ(rx.Ops().back(), Op::kShutdown);
}

// An AF_UNIX stream read stops after bytes that carried an fd, with more bytes queued behind
// them and no new edge to come for those.
TEST_F(VsockConnectionTest, BytesQueuedBehindAPassedFdReachTheGuestOnTheSameEdge) {
  Connection conn = Guest(StreamHeader(Op::kRequest, kConnBufferSize));
  ASSERT_EQ(::send(host_.Get(), "ab", 2, 0), 2);
  const int passed[] = {STDIN_FILENO};
  absl::StatusOr<std::size_t> sent = base::SendWithFds(host_.Get(), "cd", passed);
  ASSERT_TRUE(sent.ok()) << sent.status();
  ASSERT_EQ(*sent, 2u);
  ASSERT_EQ(::send(host_.Get(), "ef", 2, 0), 2);
  ASSERT_EQ(conn.OnHostReady(true), Connection::Verdict::kKeep);  // one edge for all of it
  RecordingRx rx;
  for (int i = 0; i < 8 && conn.HasPendingRx(); ++i) (void)conn.FillRx(rx);
  EXPECT_EQ(rx.data, Bytes("abcdef"));
  EXPECT_FALSE(conn.HasPendingRx());
}

TEST_F(VsockConnectionTest, HostHalfCloseSendsShutdownSendAndKeepsTakingGuestData) {
  Connection conn = Guest();
  ASSERT_EQ(::shutdown(host_.Get(), SHUT_WR), 0);
  ASSERT_EQ(conn.OnHostReady(true), Connection::Verdict::kKeep);
  RecordingRx rx;
  ASSERT_TRUE(conn.FillRx(rx).used);
  ASSERT_EQ(rx.Ops(), std::vector<Op>{Op::kShutdown});
  EXPECT_EQ(rx.packets[0].flags, kShutdownSend);
  EXPECT_EQ(conn.state(), Connection::State::kEstablished);
  EXPECT_FALSE(conn.WantsToRead()) << "nothing more to read after EOF";
  const Header rw = StreamHeader(Op::kRw);
  EXPECT_EQ(Deliver(conn, rw, Bytes("answer")).verdict,
            Connection::Verdict::kKeep);
  EXPECT_EQ(HostReads(), Bytes("answer"));
}

TEST_F(VsockConnectionTest, HostCloseSendsShutdownBothWaysAndTheGuestsAnswerEndsIt) {
  Connection conn = Guest();
  host_.Reset();
  ASSERT_EQ(conn.OnHostReady(true), Connection::Verdict::kKeep);
  RecordingRx rx;
  ASSERT_TRUE(conn.FillRx(rx).used);
  ASSERT_EQ(rx.Ops(), std::vector<Op>{Op::kShutdown});
  EXPECT_EQ(rx.packets[0].flags, kShutdownSend | kShutdownRcv);
  EXPECT_EQ(conn.state(), Connection::State::kClosing);
  const Header rw = StreamHeader(Op::kRw);
  const auto dropped = Deliver(conn, rw, Bytes("late"));
  EXPECT_EQ(dropped.verdict, Connection::Verdict::kKeep) << "late data is dropped, no fault";
  EXPECT_EQ(dropped.fault, Connection::Fault::kNone);
  const Header shutdown = StreamHeader(Op::kShutdown, 0, 0, kShutdownRcv | kShutdownSend);
  EXPECT_EQ(Deliver(conn, shutdown).verdict,
            Connection::Verdict::kReset);
}

TEST_F(VsockConnectionTest, GuestSendShutdownHalfClosesTheHostStream) {
  Connection conn = Guest();
  const Header shutdown = StreamHeader(Op::kShutdown, 64 * 1024, 0, kShutdownSend);
  EXPECT_EQ(Deliver(conn, shutdown).verdict, Connection::Verdict::kKeep);
  char c;
  EXPECT_EQ(::recv(host_.Get(), &c, 1, MSG_DONTWAIT), 0) << "the host sees EOF";
  const Header rw = StreamHeader(Op::kRw);
  const auto out = Deliver(conn, rw, Bytes("after"));
  EXPECT_EQ(out.verdict, Connection::Verdict::kReset);
  EXPECT_EQ(out.fault, Connection::Fault::kMalformed) << "data after the guest's SEND shutdown";
}

TEST_F(VsockConnectionTest, GuestFullShutdownAsksForTheClosingRst) {
  Connection conn = Guest();
  const Header shutdown = StreamHeader(Op::kShutdown, 64 * 1024, 0, kShutdownRcv | kShutdownSend);
  EXPECT_EQ(Deliver(conn, shutdown).verdict,
            Connection::Verdict::kReset);
}

TEST_F(VsockConnectionTest, GuestRstIsForgottenWithoutAnswer) {
  Connection conn = Guest();
  const Header rst = StreamHeader(Op::kRst);
  EXPECT_EQ(Deliver(conn, rst).verdict, Connection::Verdict::kForget);
}

TEST_F(VsockConnectionTest, HeaderOnlyRxBufferGetsACreditUpdateAndTheDataTheNextBuffer) {
  Connection conn = Guest();
  ASSERT_EQ(::send(host_.Get(), "data", 4, 0), 4);
  ASSERT_EQ(conn.OnHostReady(true), Connection::Verdict::kKeep);
  RecordingRx rx;
  rx.header_only = true;
  ASSERT_TRUE(conn.FillRx(rx).used) << "the buffer must not go back to the ring";
  EXPECT_EQ(rx.Ops(), std::vector<Op>{Op::kCreditUpdate});
  EXPECT_TRUE(conn.HasPendingRx()) << "the data still waits";
  ASSERT_TRUE(conn.FillRx(rx).used);
  EXPECT_EQ(rx.data, Bytes("data"));
  EXPECT_EQ(conn.rx_cnt(), 4u);
}

}  // namespace
}  // namespace ember::virtio::vsock
