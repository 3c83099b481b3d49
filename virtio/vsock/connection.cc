#include "virtio/vsock/connection.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

namespace ember::virtio::vsock {

void Connection::Append(std::span<const std::uint8_t> bytes, bool counted) {
  if (tx_offset > 0 && tx_offset * 2 >= tx_buf.size()) {
    tx_buf.erase(tx_buf.begin(), tx_buf.begin() + static_cast<std::ptrdiff_t>(tx_offset));
    tx_offset = 0;
  }
  tx_buf.insert(tx_buf.end(), bytes.begin(), bytes.end());
  if (!counted) uncounted_bytes += bytes.size();
}

bool Connection::Flush() {
  while (tx_offset < tx_buf.size()) {
    const ssize_t n = ::send(sock.Get(), tx_buf.data() + tx_offset, tx_buf.size() - tx_offset,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
    auto written = static_cast<std::size_t>(n);
    tx_offset += written;
    const std::size_t uncounted = std::min(uncounted_bytes, written);
    uncounted_bytes -= uncounted;
    fwd_cnt += static_cast<std::uint32_t>(written - uncounted);
  }
  tx_buf.clear();
  tx_offset = 0;
  return true;
}

}  // namespace ember::virtio::vsock
