#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

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

// One stream between a guest port and a host Unix socket. Owned by the VsockDevice and used
// under its lock. Counters are the spec's wrapping u32s.
struct Connection {
  enum class State {
    kLocalInit,    // the host connected; REQUEST sent or queued, awaiting the guest's RESPONSE
    kEstablished,
    kClosing,      // the host closed both ways; SHUTDOWN sent, awaiting the guest's RST
  };

  Connection(base::UniqueFd socket, std::uint32_t local, std::uint32_t peer, State initial,
             bool by_host)
      : sock(std::move(socket)),
        local_port(local),
        peer_port(peer),
        host_initiated(by_host),
        state(initial) {}

  // Credit the guest has left for data from the host (spec 5.10.6.3).
  [[nodiscard]] std::uint32_t PeerFreeCredit() const {
    const std::uint32_t in_flight = rx_cnt - peer_fwd_cnt;
    return in_flight >= peer_buf_alloc ? 0 : peer_buf_alloc - in_flight;
  }
  // Whether to tell the guest fwd_cnt now: it has news, and the credit the guest believes it
  // has left (its sent bytes are fwd_cnt plus what is buffered here) is below
  // kCreditUpdateBelow.
  [[nodiscard]] bool CreditUpdateDue() const {
    const std::uint32_t unacked = fwd_cnt + static_cast<std::uint32_t>(PendingGuestBytes()) -
                                  last_fwd_cnt_sent;
    return fwd_cnt != last_fwd_cnt_sent && kConnBufferSize - std::min(unacked, kConnBufferSize) <
                                               kCreditUpdateBelow;
  }
  // Guest bytes accepted but not yet written to the host socket.
  [[nodiscard]] std::size_t PendingGuestBytes() const { return tx_len - uncounted_bytes; }
  [[nodiscard]] bool TxBufferEmpty() const { return tx_len == 0; }
  // The free space of the buffer where the next `len` bytes go, in order: the second span is
  // empty unless they wrap around its end. `len` must fit: the guest's credit (checked by the
  // device) bounds the guest data, kMaxUncountedBytes the rest.
  [[nodiscard]] std::array<std::span<std::uint8_t>, 2> TxSpace(std::size_t len);
  // Queues the `len` bytes just written into TxSpace(len) for the host socket; `counted` ones
  // are guest data that advance fwd_cnt.
  void CommitTx(std::size_t len, bool counted);
  // TxSpace + copy + CommitTx.
  void Append(std::span<const std::uint8_t> bytes, bool counted);
  // Writes as much of the buffer as the socket takes. Returns false when the socket is
  // broken (EPIPE, ECONNRESET); EAGAIN is not an error.
  [[nodiscard]] bool Flush();
  // Drops whatever is buffered (the host peer is gone).
  void DropTx();

  base::UniqueFd sock;
  const std::uint32_t local_port;  // the host-side port
  const std::uint32_t peer_port;   // the guest-side port
  const bool host_initiated;       // local_port was allocated by the device
  State state;

  // Flow control.
  std::uint32_t peer_buf_alloc = 0;
  std::uint32_t peer_fwd_cnt = 0;
  std::uint32_t rx_cnt = 0;         // payload bytes sent to the guest
  std::uint32_t fwd_cnt = 0;        // guest payload bytes written to the host socket
  std::uint32_t last_fwd_cnt_sent = 0;
  bool credit_requested = false;    // a CREDIT_REQUEST is out and not answered yet

  // Towards the host: guest data (and the "OK <port>\n" reply, uncounted) not yet written,
  // in a ring allocated at the first write the socket did not take, so that a connection
  // whose host reader keeps up costs no buffer, and one that falls behind allocates once and
  // copies each byte once.
  static constexpr std::size_t kTxRingSize = kConnBufferSize + kMaxUncountedBytes;
  std::unique_ptr<std::uint8_t[]> tx_ring;
  std::size_t tx_start = 0;         // ring offset of the oldest unwritten byte
  std::size_t tx_len = 0;           // unwritten bytes
  std::size_t uncounted_bytes = 0;  // leading bytes of the buffer that are not guest data

  // Shutdown state.
  bool guest_shut_send = false;     // the guest will send no more
  bool guest_shut_rcv = false;      // the guest will receive no more
  bool host_eof = false;            // the host will send no more
  bool host_shut_wr = false;        // shutdown(SHUT_WR) done after the guest's SEND shutdown

  // Packets waiting for an RX buffer.
  bool want_request = false;
  bool want_response = false;
  bool want_credit_update = false;
  bool want_credit_request = false;
  bool want_data = false;           // the socket was readable; interest off until read
  bool in_rx_list = false;
  // RX buffers the next read of the socket fills at once: grows while reads fill every
  // buffer, shrinks to what a short read needed (VsockDevice::ReadHostData).
  std::size_t rx_batch = 1;
  bool dead = false;                // to be removed once the caller is done with it

  std::uint32_t interest = ~0u;     // epoll events currently asked for; ~0: not yet set
};

}  // namespace ember::virtio::vsock
