#include "virtio/testing/fake_vsock_driver.h"

#include <algorithm>
#include <cstdlib>

#include "vmm/base/logging.h"

namespace ember::virtio::testing {
namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    EMBER_LOG(kError) << "fake vsock driver: " << what;
    std::abort();
  }
}

}  // namespace

vsock::Header GuestHeader(vsock::Op op, std::uint32_t guest_port, std::uint32_t host_port,
                          std::uint32_t fwd_cnt, std::uint32_t flags) {
  vsock::Header h;
  h.src_cid = kFakeGuestCid;
  h.dst_cid = vsock::kHostCid;
  h.src_port = guest_port;
  h.dst_port = host_port;
  h.type = vsock::kTypeStream;
  h.op = static_cast<std::uint16_t>(op);
  h.flags = flags;
  h.buf_alloc = kFakeGuestBufAlloc;
  h.fwd_cnt = fwd_cnt;
  return h;
}

void FakeVsockDriver::AddRxBuffers(std::size_t count, std::uint32_t size) {
  AddSplitRxBuffers(count, std::span(&size, 1));
}

void FakeVsockDriver::AddSplitRxBuffers(std::size_t count, std::span<const std::uint32_t> sizes) {
  for (std::size_t i = 0; i < count; ++i) {
    std::vector<FakeBuffer> chain;
    for (const std::uint32_t size : sizes) chain.push_back({alloc_->Alloc(size), size, true});
    rx_buffers_[rx_->AddChain(chain)] = std::move(chain);
  }
}

std::optional<VsockPacket> FakeVsockDriver::PopRx() {
  auto used = rx_->PopUsed();
  if (!used) return std::nullopt;
  auto it = rx_buffers_.find(static_cast<std::uint16_t>(used->id));
  Check(it != rx_buffers_.end(), "used RX head the driver never posted");
  std::uint64_t capacity = 0;
  for (const FakeBuffer& buffer : it->second) capacity += buffer.len;
  Check(used->len >= vsock::kHeaderSize && used->len <= capacity, "bad used length");
  std::vector<std::uint8_t> bytes(used->len);
  std::size_t done = 0;
  for (const FakeBuffer& buffer : it->second) {
    const std::size_t take = std::min<std::size_t>(buffer.len, bytes.size() - done);
    Check(memory_->Read(buffer.addr, std::span(bytes).subspan(done, take)).ok(), "read RX buffer");
    done += take;
  }
  rx_buffers_.erase(it);
  VsockPacket packet;
  packet.header = vsock::Header::Decode(std::span(bytes).first<vsock::kHeaderSize>());
  packet.payload.assign(bytes.begin() + vsock::kHeaderSize, bytes.end());
  Check(packet.header.len == packet.payload.size(), "header len differs from used length");
  return packet;
}

std::uint16_t FakeVsockDriver::Send(vsock::Header header, std::span<const std::uint8_t> payload,
                                    bool keep_len) {
  if (!keep_len) header.len = static_cast<std::uint32_t>(payload.size());
  const auto raw = header.Encode();
  std::vector<FakeBuffer> chain{{alloc_->Alloc(raw.size()), vsock::kHeaderSize, false}};
  Check(memory_->Write(chain[0].addr, raw).ok(), "write TX header");
  if (!payload.empty()) {
    const auto len = static_cast<std::uint32_t>(payload.size());
    chain.push_back({alloc_->Alloc(len), len, false});
    Check(memory_->Write(chain[1].addr, payload).ok(), "write TX payload");
  }
  return tx_->AddChain(chain);
}

std::uint16_t FakeVsockDriver::SendRaw(std::span<const std::uint8_t> bytes, bool writable) {
  const auto len = static_cast<std::uint32_t>(bytes.size());
  const FakeBuffer buffer{alloc_->Alloc(len == 0 ? 1 : len), len, writable};
  if (len > 0) Check(memory_->Write(buffer.addr, bytes).ok(), "write TX bytes");
  return tx_->AddChain(std::span(&buffer, 1));
}

std::size_t FakeVsockDriver::ReapTx() {
  std::size_t n = 0;
  while (tx_->PopUsed()) ++n;
  return n;
}

void FakeVsockDriver::AddEventBuffers(std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    const FakeBuffer buffer{alloc_->Alloc(8), 8, true};
    event_buffers_[event_->AddChain(std::span(&buffer, 1))] = buffer;
  }
}

std::optional<std::uint32_t> FakeVsockDriver::PopEvent() {
  auto used = event_->PopUsed();
  if (!used) return std::nullopt;
  auto it = event_buffers_.find(static_cast<std::uint16_t>(used->id));
  Check(it != event_buffers_.end() && used->len == 4, "bad event entry");
  auto id = memory_->ReadObj<std::uint32_t>(it->second.addr);
  Check(id.ok(), "read event");
  event_buffers_.erase(it);
  return *id;
}

}  // namespace ember::virtio::testing
