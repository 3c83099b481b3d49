#include "virtio/testing/fake_block_driver.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "vmm/base/logging.h"

namespace ember::virtio::testing {
namespace {

constexpr std::uint32_t kTypeIn = 0;
constexpr std::uint32_t kTypeGetId = 8;

void Check(const absl::Status& status) {
  if (!status.ok()) {
    EMBER_LOG(kError) << "fake block driver: " << status;
    std::abort();
  }
}

}  // namespace

BlockRequestBuffers FakeBlockDriver::Allocate(std::uint32_t data_len) {
  BlockRequestBuffers b;
  b.header = alloc_->Alloc(16);
  // Page-aligned, as Linux's page-cache buffers are, so O_DIRECT drives accept them.
  b.data = alloc_->Alloc(data_len == 0 ? 1 : data_len, 4096);
  b.data_len = data_len;
  b.status = alloc_->Alloc(1, 1);
  return b;
}

std::uint16_t FakeBlockDriver::Add(const BlockRequestBuffers& buffers, std::uint32_t type,
                                   std::uint64_t sector, std::uint32_t segments, bool indirect) {
  // struct virtio_blk_outhdr field by field (type, reserved, sector): copying in a struct
  // built just before stalls on store forwarding.
  std::uint8_t* header = Host(buffers.header, 16);
  const std::uint32_t reserved = 0;
  std::memcpy(header, &type, sizeof(type));
  std::memcpy(header + 4, &reserved, sizeof(reserved));
  std::memcpy(header + 8, &sector, sizeof(sector));
  *Host(buffers.status, 1) = 0xff;

  const bool data_writable = type == kTypeIn || type == kTypeGetId;
  std::vector<FakeBuffer>& chain = chain_;
  chain.clear();
  // Filled in place: copying temporaries in stalls on store forwarding, which the block
  // benchmark, which runs this a million times a second, would count against the device.
  auto add = [&chain](base::GuestAddress addr, std::uint32_t len, bool device_writable) {
    FakeBuffer& buffer = chain.emplace_back();
    buffer.addr = addr;
    buffer.len = len;
    buffer.device_writable = device_writable;
  };
  add(buffers.header, 16, false);
  if (buffers.data_len > 0) {
    const std::uint32_t piece = (buffers.data_len + segments - 1) / segments;
    for (std::uint32_t done = 0; done < buffers.data_len; done += piece) {
      add(buffers.data + done, std::min(piece, buffers.data_len - done), data_writable);
    }
  }
  add(buffers.status, 1, true);
  if (indirect) return queue_->AddIndirectChain(alloc_->Alloc(16 * chain.size()), chain);
  return queue_->AddChain(chain);
}

BlockRequestBuffers FakeBlockDriver::AddNew(std::uint32_t type, std::uint64_t sector,
                                            std::uint32_t data_len, std::uint32_t segments,
                                            bool indirect) {
  BlockRequestBuffers buffers = Allocate(data_len);
  Add(buffers, type, sector, segments, indirect);
  return buffers;
}

std::uint8_t FakeBlockDriver::Status(const BlockRequestBuffers& buffers) const {
  return *Host(buffers.status, 1);
}

std::uint8_t* FakeBlockDriver::Host(base::GuestAddress addr, std::uint64_t len) const {
  std::uint8_t* host = memory_->HostAddress(addr, len);
  if (host == nullptr) {
    EMBER_LOG(kError) << "fake block driver: 0x" << std::hex << addr << "+0x" << len
                      << " is outside guest memory";
    std::abort();
  }
  return host;
}

void FakeBlockDriver::WriteData(const BlockRequestBuffers& buffers,
                                std::span<const std::uint8_t> data) const {
  Check(memory_->Write(buffers.data, data));
}

std::vector<std::uint8_t> FakeBlockDriver::ReadData(const BlockRequestBuffers& buffers) const {
  std::vector<std::uint8_t> data(buffers.data_len);
  Check(memory_->Read(buffers.data, data));
  return data;
}

}  // namespace ember::virtio::testing
