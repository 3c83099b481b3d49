#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vmm/base/unique_fd.h"

namespace ember::virtio::vsock {

// The receive buffer each connection advertises to the guest (buf_alloc): the most guest
// data the device ever holds for one connection while the host reader is slow.
inline constexpr std::uint32_t kConnBufferSize = 256 * 1024;
// A CREDIT_UPDATE goes out once the device has forwarded this much since the guest last
// heard its fwd_cnt (every packet to the guest carries it, too).
inline constexpr std::uint32_t kCreditUpdateThreshold = kConnBufferSize / 4;

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
  // Guest bytes accepted but not yet written to the host socket.
  [[nodiscard]] std::size_t PendingGuestBytes() const {
    return tx_buf.size() - tx_offset - uncounted_bytes;
  }
  [[nodiscard]] bool TxBufferEmpty() const { return tx_offset == tx_buf.size(); }
  // Queues bytes for the host socket; `counted` ones are guest data that advance fwd_cnt.
  void Append(std::span<const std::uint8_t> bytes, bool counted);
  // Writes as much of the buffer as the socket takes. Returns false when the socket is
  // broken (EPIPE, ECONNRESET); EAGAIN is not an error.
  [[nodiscard]] bool Flush();

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

  // Towards the host: guest data (and the "OK <port>\n" reply, uncounted) not yet written.
  std::vector<std::uint8_t> tx_buf;
  std::size_t tx_offset = 0;
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
