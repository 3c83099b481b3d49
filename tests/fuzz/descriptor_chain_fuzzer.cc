// libFuzzer target: a hostile driver's whole view of one virtqueue. The input supplies the
// queue size, the negotiated features and the bytes of guest memory holding the descriptor
// table, the rings and the buffers; the device side must pop, parse and complete chains
// without touching memory outside the guest, looping, or crashing.
//
// Run by ctest -L fuzz (tests/fuzz/CMakeLists.txt); by hand: build/fuzz/descriptor_chain_fuzzer
// -max_len=70000 tests/fuzz/corpus/descriptor_chain_fuzzer

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>

#include "virtio/queue.h"
#include "virtio/spec.h"
#include "vmm/base/guest_memory.h"

namespace {

constexpr std::uint64_t kMemSize = 64 * 1024;

const ember::base::GuestMemory& Memory() {
  // One mapping for the whole run: creating a memfd per input would dominate the time.
  static const ember::base::GuestMemory memory =
      ember::base::GuestMemory::Create({{0, kMemSize}}).value();
  return memory;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace ember::virtio;
  if (size < 4) return 0;
  // Byte 0: log2 of the queue size (1..256); byte 1: feature choice; bytes 2-3: where the
  // rings start, in 16-byte units. The rest is guest memory.
  const auto queue_size = static_cast<std::uint16_t>(1u << (data[0] % 9));
  std::uint64_t features = FeatureBit(kFeatureVersion1);
  if ((data[1] & 1) != 0) features |= FeatureBit(kFeatureIndirectDesc);
  if ((data[1] & 2) != 0) features |= FeatureBit(kFeatureEventIdx);
  const std::uint64_t base =
      (std::uint64_t{data[2]} | (std::uint64_t{data[3]} << 8)) * 16 % kMemSize;

  const ember::base::GuestMemory& memory = Memory();
  auto all = memory.Slice(0, kMemSize).value();
  std::memset(all.data(), 0, all.size());
  std::memcpy(all.data(), data + 4, std::min<std::size_t>(size - 4, kMemSize));

  QueueLayout layout;
  layout.size = queue_size;
  layout.desc_table = base;
  layout.avail_ring = base + 16ull * queue_size;
  layout.used_ring = (layout.avail_ring + 6 + 2ull * queue_size + 3) & ~std::uint64_t{3};
  auto queue = Queue::Create(memory, layout, 256, features);
  if (!queue.ok()) return 0;

  // Twice the queue size bounds the work even if the driver keeps "publishing".
  for (int i = 0; i < 2 * queue_size; ++i) {
    auto chain = queue->Pop();
    if (!chain.ok() || !chain->has_value()) break;
    const DescriptorChain& c = **chain;
    // Touch every byte the parser handed out, as a device would.
    std::uint64_t sum = 0;
    for (const Descriptor& d : c.descriptors) {
      for (std::uint8_t byte : d.host) sum += byte;
    }
    queue->AddUsed(c.head, static_cast<std::uint32_t>(sum & 0xff));
  }
  (void)queue->NeedsInterrupt();
  (void)queue->EnableNotification();
  return 0;
}
