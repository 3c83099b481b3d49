#include "virtio/vsock/connection.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "vmm/base/logging.h"

namespace ember::virtio::vsock {
namespace {

bool WouldBlock(int error) { return error == EAGAIN || error == EWOULDBLOCK; }

}  // namespace

Connection::Connection(base::UniqueFd sock, std::uint64_t guest_cid, std::uint32_t local_port,
                       std::uint32_t peer_port, State initial, bool host_initiated)
    : sock_(std::move(sock)),
      guest_cid_(guest_cid),
      local_port_(local_port),
      peer_port_(peer_port),
      host_initiated_(host_initiated),
      state_(initial) {}

Connection Connection::FromHost(base::UniqueFd sock, std::uint64_t guest_cid,
                                std::uint32_t local_port, std::uint32_t peer_port) {
  Connection conn(std::move(sock), guest_cid, local_port, peer_port, State::kLocalInit, true);
  conn.want_request_ = true;
  return conn;
}

Connection Connection::FromGuest(base::UniqueFd sock, const Header& request) {
  Connection conn(std::move(sock), request.src_cid, request.dst_port, request.src_port,
                  State::kEstablished, false);
  conn.peer_buf_alloc_ = request.buf_alloc;
  conn.peer_fwd_cnt_ = request.fwd_cnt;
  conn.want_response_ = true;
  return conn;
}

// --- Credit accounting ----------------------------------------------------------------------

std::uint32_t Connection::PeerFreeCredit() const {
  const std::uint32_t in_flight = rx_cnt_ - peer_fwd_cnt_;
  return in_flight >= peer_buf_alloc_ ? 0 : peer_buf_alloc_ - in_flight;
}

bool Connection::CreditUpdateDue() const {
  const std::uint32_t unacked =
      fwd_cnt_ + static_cast<std::uint32_t>(PendingGuestBytes()) - last_fwd_cnt_sent_;
  return fwd_cnt_ != last_fwd_cnt_sent_ &&
         kConnBufferSize - std::min(unacked, kConnBufferSize) < kCreditUpdateBelow;
}

void Connection::MaybeWantCreditUpdate() {
  if (CreditUpdateDue()) want_credit_update_ = true;
}

Header Connection::ReplyHeader(Op op) const {
  Header h;
  h.src_cid = kHostCid;
  h.dst_cid = guest_cid_;
  h.src_port = local_port_;
  h.dst_port = peer_port_;
  h.type = kTypeStream;
  h.op = static_cast<std::uint16_t>(op);
  h.buf_alloc = kConnBufferSize;
  h.fwd_cnt = fwd_cnt_;
  return h;
}

// --- Guest to host -----------------------------------------------------------------------------

Connection::Outcome Connection::OnGuestPacket(const Header& h, const DescriptorChain& chain) {
  // Every packet carries the guest's credit.
  if (h.fwd_cnt != peer_fwd_cnt_) credit_requested_ = false;
  peer_buf_alloc_ = h.buf_alloc;
  peer_fwd_cnt_ = h.fwd_cnt;
  switch (static_cast<Op>(h.op)) {
    case Op::kResponse: {
      if (state_ != State::kLocalInit) return {Verdict::kReset};
      state_ = State::kEstablished;
      const std::string ok = absl::StrCat("OK ", local_port_, "\n");
      // The reply is text in a byte stream.
      AppendTx(std::span(reinterpret_cast<const std::uint8_t*>(ok.data()), ok.size()),
               /*counted=*/false);
      if (!FlushTx()) return {Verdict::kReset};
      return {};
    }
    case Op::kRst:
      return {Verdict::kForget};
    case Op::kShutdown:
      return {OnGuestShutdown(h.flags)};
    case Op::kRw:
      return OnGuestRw(h, chain);
    case Op::kCreditRequest:
      want_credit_update_ = true;
      return {};
    default:  // CREDIT_UPDATE: the header said it all
      return {};
  }
}

Connection::Verdict Connection::OnGuestShutdown(std::uint32_t flags) {
  if (flags & kShutdownRcv) guest_shut_rcv_ = true;
  if (flags & kShutdownSend) guest_shut_send_ = true;
  if (state_ == State::kClosing) {
    // The host already left; the guest's SHUTDOWN answers ours.
    return guest_shut_rcv_ && guest_shut_send_ ? Verdict::kReset : Verdict::kKeep;
  }
  return MaybeFinishClose();
}

Connection::Verdict Connection::MaybeFinishClose() {
  if (!guest_shut_send_ || !TxBufferEmpty()) return Verdict::kKeep;
  // Both directions closed by the guest, everything it sent delivered: the RST completes its
  // close (spec 5.10.6.6).
  if (guest_shut_rcv_) return Verdict::kReset;
  if (!host_shut_wr_) {
    ::shutdown(sock_.Get(), SHUT_WR);
    host_shut_wr_ = true;
  }
  return Verdict::kKeep;
}

Connection::Outcome Connection::OnGuestRw(const Header& h, const DescriptorChain& chain) {
  if (h.len == 0) return {};
  if (state_ == State::kClosing) return {};  // the host is gone; drop
  if (state_ != State::kEstablished || guest_shut_send_) {
    return {Verdict::kReset, Fault::kMalformed};
  }
  if (PendingGuestBytes() + h.len > kConnBufferSize) {
    EMBER_LOG(kDebug) << "vsock: guest overran its credit on port " << peer_port_;
    return {Verdict::kReset, Fault::kCreditOverrun};
  }
  Outcome out{Verdict::kKeep, Fault::kNone, h.len};
  std::size_t written = 0;
  const bool was_empty = TxBufferEmpty();
  bool sent = false;
  IoVecs iovs;
  // Straight from guest memory to the socket when nothing is queued before this packet.
  if (was_empty && chain.ReadableIoVecs(kHeaderSize, h.len, &iovs) && iovs.size() <= IOV_MAX) {
    sent = true;
    msghdr msg{};
    msg.msg_iov = iovs.data();
    msg.msg_iovlen = iovs.size();
    ssize_t n;
    do {
      n = ::sendmsg(sock_.Get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && !WouldBlock(errno)) {
      out.verdict = Verdict::kReset;
      return out;
    }
    written = n < 0 ? 0 : static_cast<std::size_t>(n);
    fwd_cnt_ += static_cast<std::uint32_t>(written);
  }
  if (written < h.len) {
    // The socket is full (or the chain too fragmented for one sendmsg): the rest goes into
    // the buffer, copied once, and the chain back to the guest, so that a slow host reader
    // holds no TX descriptors that other connections need.
    const std::size_t rest = h.len - written;
    const auto space = TxSpace(rest);
    if (!chain.CopyFromReadable(kHeaderSize + written, space[0]) ||
        !chain.CopyFromReadable(kHeaderSize + written + space[0].size(), space[1])) {
      out.verdict = Verdict::kReset;
      return out;
    }
    CommitTx(rest, /*counted=*/true);
    // A socket that just took less than offered, or has bytes queued already, is written
    // again on its next EPOLLOUT edge; trying now would only meet EAGAIN.
    if (was_empty && !sent && !FlushTx()) {
      out.verdict = Verdict::kReset;
      return out;
    }
  }
  MaybeWantCreditUpdate();
  return out;
}

// --- Host socket -------------------------------------------------------------------------------

Connection::Verdict Connection::OnHostReady(bool readable, bool peer_closed) {
  if (!TxBufferEmpty()) {
    if (!FlushTx()) return Verdict::kReset;
    MaybeWantCreditUpdate();
    if (TxBufferEmpty() && guest_shut_send_) {
      const Verdict closed = MaybeFinishClose();
      if (closed != Verdict::kKeep) return closed;
    }
  }
  // Read when an RX buffer and credit are there for it (WantsToRead).
  if (readable) host_readable_ = true;
  if (peer_closed) host_closed_ = true;
  return Verdict::kKeep;
}

// --- Host to guest -----------------------------------------------------------------------------

void Connection::SendControl(RxBuffers& rx, Op op, std::uint32_t flags) {
  Header h = ReplyHeader(op);
  h.flags = flags;
  last_fwd_cnt_sent_ = fwd_cnt_;
  rx.SendControl(h);
}

Connection::RxOutcome Connection::FillRx(RxBuffers& rx) {
  std::pair<bool*, Op> controls[] = {{&want_request_, Op::kRequest},
                                     {&want_response_, Op::kResponse},
                                     {&want_credit_update_, Op::kCreditUpdate},
                                     {&want_credit_request_, Op::kCreditRequest}};
  for (auto [wanted, op] : controls) {
    if (!*wanted) continue;
    *wanted = false;
    SendControl(rx, op);
    return {true};
  }
  if (!WantsToRead()) return {};
  return FillData(rx);
}

Connection::RxOutcome Connection::FillData(RxBuffers& rx) {
  const std::uint32_t credit = PeerFreeCredit();  // WantsToRead: more than 0
  // One read fills at most one maximal packet's worth, so that a busy connection takes its
  // turn in the round robin after 16 of Linux's 4 KiB buffers rather than after the guest's
  // whole credit.
  const RxBuffers::Read read =
      rx.ReadStream(sock_.Get(), ReplyHeader(Op::kRw), std::min(credit, kMaxPayload), rx_batch_);
  if (read.no_room) {
    // A buffer with room for a header only (spec-legal: every control packet fits) cannot
    // carry data. Putting it back would meet it again at the head of the ring on every turn
    // of the loop while the socket stays readable, and marking the device broken would punish
    // a driver the spec allows. Linux's driver takes a packet's payload from its own buffer
    // only (hdr.len beyond it is dropped), so the data cannot start here and continue in the
    // next buffers either. So the buffer carries a header-only packet that is always valid on
    // an established stream, a CREDIT_UPDATE, and the data waits for the next buffer.
    SendControl(rx, Op::kCreditUpdate);
    return {true};
  }
  if (read.n > 0) {
    rx_cnt_ += static_cast<std::uint32_t>(read.n);
    last_fwd_cnt_sent_ = fwd_cnt_;  // every packet carried it
    if (PeerFreeCredit() == 0 && !credit_requested_) {
      // The guest's buffer is full: ask how far it has read, so that its CREDIT_UPDATE lets
      // the socket be read again.
      credit_requested_ = true;
      want_credit_request_ = true;
    }
    // A read that filled every buffer means the socket probably holds more: the connection
    // stays in the muxer's RX list (round robin with the others) and reads again, twice as
    // many buffers at once, instead of waiting for the loop. A short read need not have
    // drained the socket: an AF_UNIX stream read stops after bytes that carried SCM_RIGHTS
    // (or at a change of credentials) with more queued behind them, and no new edge comes for
    // those. So the connection stays readable until a read says EAGAIN; the next batch is as
    // large as this one needed, so a trickle of small messages does not pop and put back many
    // buffers for each.
    if (read.filled) {
      rx_batch_ = std::min(rx_batch_ * 2, kMaxRxBatchChains);
    } else {
      rx_batch_ = read.used;
    }
    return {true};
  }
  if (rx.broken()) return {};
  if (read.n < 0 && WouldBlock(read.error)) {
    host_readable_ = false;  // drained; the next bytes raise a new edge
    return {};
  }
  // ECONNRESET and the like: the host peer is gone.
  if (read.n < 0) return {false, Verdict::kReset};
  // EOF. A peer that closed outright also reports POLLHUP; one that only shut down its
  // sending side can still take data, which the guest may go on sending.
  host_eof_ = true;
  pollfd pfd{sock_.Get(), POLLOUT, 0};
  const bool hung_up = ::poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLHUP) != 0;
  std::uint32_t flags = kShutdownSend;
  if (hung_up) {
    flags |= kShutdownRcv;
    state_ = State::kClosing;
    DropTx();
  }
  SendControl(rx, Op::kShutdown, flags);
  return {true};
}

// --- TX buffer ---------------------------------------------------------------------------------

std::array<std::span<std::uint8_t>, 2> Connection::TxSpace(std::size_t len) {
  if (tx_len_ + len > kTxRingSize) {
    EMBER_LOG(kError) << "vsock connection " << local_port_ << ":" << peer_port_ << ": " << len
                      << " more bytes overflow the " << tx_len_ << " buffered";
    std::abort();  // the guest's credit is checked before it gets here
  }
  if (!tx_ring_) tx_ring_ = std::make_unique_for_overwrite<std::uint8_t[]>(kTxRingSize);
  const std::size_t end = (tx_start_ + tx_len_) % kTxRingSize;
  const std::size_t first = std::min(len, kTxRingSize - end);
  return {std::span(tx_ring_.get() + end, first), std::span(tx_ring_.get(), len - first)};
}

void Connection::CommitTx(std::size_t len, bool counted) {
  tx_len_ += len;
  if (!counted) uncounted_bytes_ += len;
}

void Connection::AppendTx(std::span<const std::uint8_t> bytes, bool counted) {
  const auto space = TxSpace(bytes.size());
  std::memcpy(space[0].data(), bytes.data(), space[0].size());
  if (!space[1].empty()) {
    std::memcpy(space[1].data(), bytes.data() + space[0].size(), space[1].size());
  }
  CommitTx(bytes.size(), counted);
}

bool Connection::FlushTx() {
  while (tx_len_ > 0) {
    const std::size_t first = std::min(tx_len_, kTxRingSize - tx_start_);
    std::array<iovec, 2> iov{
        {{tx_ring_.get() + tx_start_, first}, {tx_ring_.get(), tx_len_ - first}}};
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = first == tx_len_ ? 1 : 2;
    const ssize_t n = ::sendmsg(sock_.Get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return WouldBlock(errno);
    }
    const auto written = static_cast<std::size_t>(n);
    tx_start_ = (tx_start_ + written) % kTxRingSize;
    tx_len_ -= written;
    const std::size_t uncounted = std::min(uncounted_bytes_, written);
    uncounted_bytes_ -= uncounted;
    fwd_cnt_ += static_cast<std::uint32_t>(written - uncounted);
  }
  tx_start_ = 0;  // an empty ring starts over, so the next bytes go in one piece
  return true;
}

void Connection::DropTx() {
  tx_start_ = 0;
  tx_len_ = 0;
  uncounted_bytes_ = 0;
}

}  // namespace ember::virtio::vsock
