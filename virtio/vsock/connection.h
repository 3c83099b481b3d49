#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <memory>
#include <span>

#include "virtio/descriptor_chain.h"
#include "virtio/vsock/packet.h"
#include "vmm/base/unique_fd.h"

namespace ember::virtio::vsock {

// The receive buffer each connection advertises to the guest (buf_alloc): the most guest
// data the device ever holds for one connection while the host reader is slow.
inline constexpr std::uint32_t kConnBufferSize = 256 * 1024;
// A CREDIT_UPDATE goes out once the credit the guest believes it has left falls below this
// (one maximal packet), as Linux's virtio_transport decides for its own receive side: often
// enough that a sender keeping the pipe full never stalls for one, and not once per packet.
// Every packet to the guest carries fwd_cnt, too.
inline constexpr std::uint32_t kCreditUpdateBelow = 64 * 1024;
// Room for what the device writes to the host stream besides guest data: "OK <port>\n".
inline constexpr std::size_t kMaxUncountedBytes = 32;
// The most RX buffers one read of a host socket fills (see Connection::FillRx).
inline constexpr std::size_t kMaxRxBatchChains = 64;

// The guest's RX buffers as a connection fills them. The device implements it over its RX
// queue; the first buffer is already taken from the ring when a connection is asked to fill
// it, and goes back to the ring unless the connection put a packet in it. Borrowed for one
// Connection::FillRx call.
class RxBuffers {
 public:
  struct Read {
    ssize_t n = -1;            // what readv returned; `error` holds its errno when negative
    int error = 0;
    std::size_t used = 0;      // buffers that got a packet, the first ones offered
    bool filled = false;       // the bytes read filled every buffer offered
    bool no_room = false;      // the first buffer holds a header and no payload: nothing read
  };

  // Puts the header-only packet `header` in the first buffer.
  virtual void SendControl(const Header& header) = 0;
  // One readv of `fd` into the payload areas of the first buffer and of up to
  // `max_buffers - 1` more taken from the ring, at most `max_bytes` in all. Every buffer that
  // got bytes goes to the guest as `rw` with its own len, in order; the rest go back. When the
  // first buffer has room for a header only, nothing is read and `no_room` is set.
  virtual Read ReadStream(int fd, const Header& rw, std::uint64_t max_bytes,
                          std::size_t max_buffers) = 0;
  // The driver broke the ring while buffers were taken: stop, the device needs a reset.
  [[nodiscard]] virtual bool broken() const = 0;

 protected:
  ~RxBuffers() = default;
};

// One stream between a guest port and a host Unix socket: the spec's connection state
// machine (5.10.6.4-6) and its credit accounting (5.10.6.3). The muxer owns every connection,
// routes to it what concerns it (a guest packet, its socket's readiness, an RX buffer) and
// acts on what it answers (a Verdict, what it wants from epoll, whether it has packets for the
// guest). Counters are the spec's wrapping u32s. Used on one thread (the device's lock).
class Connection {
 public:
  enum class State {
    kLocalInit,    // the host connected; REQUEST sent or queued, awaiting the guest's RESPONSE
    kEstablished,
    kClosing,      // the host closed both ways; SHUTDOWN sent, awaiting the guest's RST
  };
  // What the muxer does with the connection after an event.
  enum class Verdict {
    kKeep,
    kReset,   // queue an RST for the guest and forget the connection
    kForget,  // forget it without a word (the guest's RST)
  };
  // A guest packet the connection refused.
  enum class Fault {
    kNone,
    kMalformed,      // not valid in the connection's state
    kCreditOverrun,  // more data than the credit the device gave
  };
  struct Outcome {
    Verdict verdict = Verdict::kKeep;
    Fault fault = Fault::kNone;
    std::uint32_t accepted_bytes = 0;  // guest payload taken for the host socket
  };
  struct RxOutcome {
    bool used = false;  // the first RX buffer holds a packet
    Verdict verdict = Verdict::kKeep;
  };

  // A host peer that sent "CONNECT <peer_port>\n" on `sock`, given host-side port `local_port`:
  // the guest gets a REQUEST.
  [[nodiscard]] static Connection FromHost(base::UniqueFd sock, std::uint64_t guest_cid,
                                           std::uint32_t local_port, std::uint32_t peer_port);
  // The guest's (well-formed) REQUEST, `sock` connected to the host listener: established at
  // once; the guest gets a RESPONSE.
  [[nodiscard]] static Connection FromGuest(base::UniqueFd sock, const Header& request);

  Connection(Connection&&) = default;
  Connection& operator=(Connection&&) = delete;

  // A packet from the guest for this connection, any op but REQUEST, its header already
  // checked by the muxer (CIDs, type, op, len within `chain`, no payload on control packets).
  // `chain` holds the payload after the header.
  [[nodiscard]] Outcome OnGuestPacket(const Header& header, const DescriptorChain& chain);
  // The host socket is ready: writes what is buffered for it, and when `readable` (it reported
  // EPOLLIN/HUP/ERR) remembers that it holds something to read, until a read finds it drained.
  // `peer_closed` (EPOLLRDHUP/HUP/ERR): the host peer sends no more, so a short read does not
  // drain it; reads go on until the EOF. The socket is watched edge-triggered: an edge comes
  // only with new bytes or a state change, so a socket the device stopped reading (no credit,
  // no RX buffer) stays readable here, with no epoll_ctl to pause it and none to resume it.
  [[nodiscard]] Verdict OnHostReady(bool readable, bool peer_closed = false);
  // Fills `rx` with the next packet for the guest: REQUEST, RESPONSE, CREDIT_UPDATE,
  // CREDIT_REQUEST, then data or the SHUTDOWN the host's EOF calls for.
  [[nodiscard]] RxOutcome FillRx(RxBuffers& rx);

  // Whether FillRx has something to send once an RX buffer is there.
  [[nodiscard]] bool HasPendingRx() const {
    return want_request_ || want_response_ || want_credit_update_ || want_credit_request_ ||
           WantsToRead();
  }
  // Whether FillRx would read the host socket now: it holds something (as far as the device
  // knows), the stream is established and open guest-ward, and the guest has credit left.
  [[nodiscard]] bool WantsToRead() const {
    return host_readable_ && state_ == State::kEstablished && !host_eof_ && !guest_shut_rcv_ &&
           PeerFreeCredit() > 0;
  }
  // A header for this connection (ports, CIDs, buf_alloc, fwd_cnt), len 0.
  [[nodiscard]] Header ReplyHeader(Op op) const;

  // Credit the guest has left for data from the host (spec 5.10.6.3).
  [[nodiscard]] std::uint32_t PeerFreeCredit() const;
  // Whether to tell the guest fwd_cnt now: it has news, and the credit the guest believes it
  // has left (its sent bytes are fwd_cnt plus what is buffered here) is below
  // kCreditUpdateBelow.
  [[nodiscard]] bool CreditUpdateDue() const;
  // Guest bytes accepted but not yet written to the host socket.
  [[nodiscard]] std::size_t PendingGuestBytes() const { return tx_len_ - uncounted_bytes_; }
  [[nodiscard]] bool TxBufferEmpty() const { return tx_len_ == 0; }

  // Read-only state, for the muxer, snapshots and tests.
  [[nodiscard]] int fd() const { return sock_.Get(); }
  [[nodiscard]] State state() const { return state_; }
  [[nodiscard]] std::uint32_t local_port() const { return local_port_; }  // host side
  [[nodiscard]] std::uint32_t peer_port() const { return peer_port_; }    // guest side
  [[nodiscard]] bool host_initiated() const { return host_initiated_; }
  [[nodiscard]] std::uint32_t rx_cnt() const { return rx_cnt_; }   // payload bytes sent
  [[nodiscard]] std::uint32_t fwd_cnt() const { return fwd_cnt_; }  // guest bytes forwarded
  [[nodiscard]] std::uint32_t peer_buf_alloc() const { return peer_buf_alloc_; }
  [[nodiscard]] std::uint32_t peer_fwd_cnt() const { return peer_fwd_cnt_; }

 private:
  Connection(base::UniqueFd sock, std::uint64_t guest_cid, std::uint32_t local_port,
             std::uint32_t peer_port, State initial, bool host_initiated);

  [[nodiscard]] Outcome OnGuestRw(const Header& header, const DescriptorChain& chain);
  [[nodiscard]] Verdict OnGuestShutdown(std::uint32_t flags);
  // After the guest's SEND shutdown, once everything it sent reached the host: half-closes
  // the host stream, or asks for the closing RST when the guest shut both ways.
  [[nodiscard]] Verdict MaybeFinishClose();
  void MaybeWantCreditUpdate();
  [[nodiscard]] RxOutcome FillData(RxBuffers& rx);
  void SendControl(RxBuffers& rx, Op op, std::uint32_t flags = 0);

  // The free space of the TX buffer where the next `len` bytes go, in order: the second span
  // is empty unless they wrap around its end. `len` must fit: the guest's credit (checked
  // first) bounds the guest data, kMaxUncountedBytes the rest.
  [[nodiscard]] std::array<std::span<std::uint8_t>, 2> TxSpace(std::size_t len);
  // Queues the `len` bytes just written into TxSpace(len) for the host socket; `counted` ones
  // are guest data that advance fwd_cnt.
  void CommitTx(std::size_t len, bool counted);
  // TxSpace + copy + CommitTx.
  void AppendTx(std::span<const std::uint8_t> bytes, bool counted);
  // Writes as much of the TX buffer as the socket takes. False when the socket is broken
  // (EPIPE, ECONNRESET); EAGAIN is not an error.
  [[nodiscard]] bool FlushTx();
  void DropTx();

  base::UniqueFd sock_;
  std::uint64_t guest_cid_;
  std::uint32_t local_port_;
  std::uint32_t peer_port_;
  bool host_initiated_;  // local_port was allocated by the device
  State state_;

  // Flow control.
  std::uint32_t peer_buf_alloc_ = 0;
  std::uint32_t peer_fwd_cnt_ = 0;
  std::uint32_t rx_cnt_ = 0;
  std::uint32_t fwd_cnt_ = 0;
  std::uint32_t last_fwd_cnt_sent_ = 0;
  bool credit_requested_ = false;  // a CREDIT_REQUEST is out and not answered yet

  // Towards the host: guest data (and the "OK <port>\n" reply, uncounted) not yet written,
  // in a ring allocated at the first write the socket did not take, so that a connection
  // whose host reader keeps up costs no buffer, and one that falls behind allocates once and
  // copies each byte once.
  static constexpr std::size_t kTxRingSize = kConnBufferSize + kMaxUncountedBytes;
  std::unique_ptr<std::uint8_t[]> tx_ring_;
  std::size_t tx_start_ = 0;         // ring offset of the oldest unwritten byte
  std::size_t tx_len_ = 0;           // unwritten bytes
  std::size_t uncounted_bytes_ = 0;  // leading bytes of the buffer that are not guest data

  // Shutdown state.
  bool guest_shut_send_ = false;  // the guest will send no more
  bool guest_shut_rcv_ = false;   // the guest will receive no more
  bool host_eof_ = false;         // the host will send no more
  bool host_shut_wr_ = false;     // shutdown(SHUT_WR) done after the guest's SEND shutdown

  // Packets waiting for an RX buffer.
  bool want_request_ = false;
  bool want_response_ = false;
  bool want_credit_update_ = false;
  bool want_credit_request_ = false;
  // The host socket reported readable and no read has found it drained since.
  bool host_readable_ = false;
  bool host_closed_ = false;  // the socket reported the host peer's shutdown; EOF follows
  // RX buffers the next read of the socket fills at once: grows while reads fill every
  // buffer, shrinks to what a short read needed (FillData).
  std::size_t rx_batch_ = 1;
};

}  // namespace ember::virtio::vsock
