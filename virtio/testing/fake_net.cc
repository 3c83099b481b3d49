#include "virtio/testing/fake_net.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "vmm/base/logging.h"

namespace ember::virtio::testing {
namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    EMBER_LOG(kError) << "fake net: " << what;
    std::abort();
  }
}

}  // namespace

class FakeTap final : public net::Tap {
 public:
  explicit FakeTap(FakeTapPeer* peer) : peer_(peer) {}
  int fd() const override { return peer_->device_end_.Get(); }
  const std::string& name() const override { return name_; }
  absl::Status SetOffloads(unsigned tun_flags) override {
    if (peer_->fail_offloads_) return absl::InvalidArgumentError("TUNSETOFFLOAD: EINVAL (fake)");
    peer_->offloads_ = tun_flags;
    return absl::OkStatus();
  }
  absl::Status SetVnetHeaderSize(int bytes) override {
    peer_->vnet_header_size_ = bytes;
    return absl::OkStatus();
  }

 private:
  FakeTapPeer* peer_;
  std::string name_ = "faketap";
};

FakeTapPeer::FakeTapPeer() {
  int fds[2];
  Check(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) == 0, "socketpair");
  device_end_.Reset(fds[0]);
  peer_end_.Reset(fds[1]);
  // Room for a few 64 KiB frames in flight each way.
  const int buf = 1 << 20;
  ::setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
  ::setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
  const int flags = ::fcntl(fds[0], F_GETFL);
  Check(::fcntl(fds[0], F_SETFL, flags | O_NONBLOCK) == 0, "O_NONBLOCK");
}

std::unique_ptr<net::Tap> FakeTapPeer::MakeTap() { return std::make_unique<FakeTap>(this); }

bool FakeTapPeer::Send(std::span<const std::uint8_t> frame) const {
  return ::send(peer_end_.Get(), frame.data(), frame.size(), MSG_DONTWAIT) ==
         static_cast<ssize_t>(frame.size());
}

std::optional<std::vector<std::uint8_t>> FakeTapPeer::Receive() const {
  std::vector<std::uint8_t> frame(1 << 17);
  const ssize_t n = ::recv(peer_end_.Get(), frame.data(), frame.size(), MSG_DONTWAIT);
  if (n < 0) return std::nullopt;
  frame.resize(static_cast<std::size_t>(n));
  return frame;
}

void FakeNetDriver::AddRxBuffers(std::size_t count, std::uint32_t size, std::uint32_t segments) {
  for (std::size_t i = 0; i < count; ++i) {
    std::vector<FakeBuffer> chain;
    const std::uint32_t piece = (size + segments - 1) / segments;
    for (std::uint32_t done = 0; done < size; done += piece) {
      const std::uint32_t len = std::min(piece, size - done);
      chain.push_back({alloc_->Alloc(len), len, true});
    }
    const std::uint16_t head = rx_->AddChain(chain);
    rx_buffers_[head] = std::move(chain);
  }
}

std::optional<std::vector<std::uint8_t>> FakeNetDriver::PopRx() {
  auto used = rx_->PopUsed();
  if (!used) return std::nullopt;
  auto it = rx_buffers_.find(static_cast<std::uint16_t>(used->id));
  Check(it != rx_buffers_.end(), "used RX head the driver never posted");
  std::vector<std::uint8_t> bytes;
  std::uint32_t left = used->len;
  for (const FakeBuffer& b : it->second) {
    const std::uint32_t take = std::min(left, b.len);
    std::vector<std::uint8_t> part(take);
    Check(memory_->Read(b.addr, part).ok(), "read RX buffer");
    bytes.insert(bytes.end(), part.begin(), part.end());
    left -= take;
  }
  rx_buffers_.erase(it);
  return bytes;
}

std::uint16_t FakeNetDriver::AddTx(std::span<const std::uint8_t> bytes, std::uint32_t segments) {
  const auto size = static_cast<std::uint32_t>(bytes.size());
  const std::uint32_t piece = (size + segments - 1) / segments;
  std::vector<std::uint32_t> lengths;
  for (std::uint32_t done = 0; done < size; done += piece) lengths.push_back(std::min(piece, size - done));
  std::unique_ptr<bool[]> writable(new bool[lengths.size()]());
  return AddTxRaw(bytes, lengths, std::span(writable.get(), lengths.size()));
}

std::uint16_t FakeNetDriver::AddTxRaw(std::span<const std::uint8_t> bytes,
                                      std::span<const std::uint32_t> lengths,
                                      std::span<const bool> writable) {
  std::vector<FakeBuffer> chain;
  std::size_t offset = 0;
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    const base::GuestAddress addr = alloc_->Alloc(lengths[i] == 0 ? 1 : lengths[i]);
    const std::size_t take = std::min<std::size_t>(lengths[i], bytes.size() - std::min(offset, bytes.size()));
    if (take > 0) Check(memory_->Write(addr, bytes.subspan(offset, take)).ok(), "write TX buffer");
    offset += take;
    chain.push_back({addr, lengths[i], writable[i]});
  }
  return tx_->AddChain(chain);
}

std::vector<std::uint8_t> MakeNetFrame(std::span<const std::uint8_t> header12,
                                       std::span<const std::uint8_t> payload) {
  std::vector<std::uint8_t> frame(header12.begin(), header12.end());
  frame.insert(frame.end(), payload.begin(), payload.end());
  return frame;
}

}  // namespace ember::virtio::testing
