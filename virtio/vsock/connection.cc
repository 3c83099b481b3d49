#include "virtio/vsock/connection.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "vmm/base/logging.h"

namespace ember::virtio::vsock {

std::array<std::span<std::uint8_t>, 2> Connection::TxSpace(std::size_t len) {
  if (tx_len + len > kTxRingSize) {
    EMBER_LOG(kError) << "vsock connection " << local_port << ":" << peer_port << ": " << len
                      << " more bytes overflow the " << tx_len << " buffered";
    std::abort();  // the device checks the guest's credit before it gets here
  }
  if (!tx_ring) tx_ring = std::make_unique_for_overwrite<std::uint8_t[]>(kTxRingSize);
  const std::size_t end = (tx_start + tx_len) % kTxRingSize;
  const std::size_t first = std::min(len, kTxRingSize - end);
  return {std::span(tx_ring.get() + end, first), std::span(tx_ring.get(), len - first)};
}

void Connection::CommitTx(std::size_t len, bool counted) {
  tx_len += len;
  if (!counted) uncounted_bytes += len;
}

void Connection::Append(std::span<const std::uint8_t> bytes, bool counted) {
  const auto space = TxSpace(bytes.size());
  std::memcpy(space[0].data(), bytes.data(), space[0].size());
  if (!space[1].empty()) {
    std::memcpy(space[1].data(), bytes.data() + space[0].size(), space[1].size());
  }
  CommitTx(bytes.size(), counted);
}

bool Connection::Flush() {
  while (tx_len > 0) {
    const std::size_t first = std::min(tx_len, kTxRingSize - tx_start);
    std::array<iovec, 2> iov{{{tx_ring.get() + tx_start, first}, {tx_ring.get(), tx_len - first}}};
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = first == tx_len ? 1 : 2;
    const ssize_t n = ::sendmsg(sock.Get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
    const auto written = static_cast<std::size_t>(n);
    tx_start = (tx_start + written) % kTxRingSize;
    tx_len -= written;
    const std::size_t uncounted = std::min(uncounted_bytes, written);
    uncounted_bytes -= uncounted;
    fwd_cnt += static_cast<std::uint32_t>(written - uncounted);
  }
  tx_start = 0;  // an empty ring starts over, so the next bytes go in one piece
  return true;
}

void Connection::DropTx() {
  tx_start = 0;
  tx_len = 0;
  uncounted_bytes = 0;
}

}  // namespace ember::virtio::vsock
