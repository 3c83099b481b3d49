#include "vmm/bus.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace ember::vmm {

Bus::Bus(const char* name)
    : unhandled_(base::MetricsRegistry::Global().Get(name, "unhandled_accesses")) {}

absl::Status Bus::Insert(std::uint64_t base, std::uint64_t size, base::BusDevice* device) {
  if (size == 0 || base + size < base) return absl::InvalidArgumentError("bad bus range");
  auto next = entries_.lower_bound(base);
  bool overlaps_next = next != entries_.end() && next->first < base + size;
  bool overlaps_prev = next != entries_.begin() &&
                       std::prev(next)->first + std::prev(next)->second.size > base;
  if (overlaps_next || overlaps_prev) {
    return absl::AlreadyExistsError(
        absl::StrFormat("bus range 0x%x+0x%x overlaps another device", base, size));
  }
  entries_.emplace(base, Entry{size, device});
  return absl::OkStatus();
}

base::BusDevice* Bus::Find(std::uint64_t addr, std::uint64_t len, std::uint64_t* offset) const {
  auto it = entries_.upper_bound(addr);
  if (it == entries_.begin()) return nullptr;
  --it;
  std::uint64_t off = addr - it->first;
  if (off >= it->second.size || len > it->second.size - off) return nullptr;
  *offset = off;
  return it->second.device;
}

bool Bus::Read(std::uint64_t addr, std::span<std::uint8_t> data) const {
  std::uint64_t offset = 0;
  base::BusDevice* device = Find(addr, data.size(), &offset);
  if (device == nullptr) {
    std::fill(data.begin(), data.end(), 0xff);
    unhandled_->Add();
    return false;
  }
  device->Read(offset, data);
  return true;
}

bool Bus::Write(std::uint64_t addr, std::span<const std::uint8_t> data) const {
  std::uint64_t offset = 0;
  base::BusDevice* device = Find(addr, data.size(), &offset);
  if (device == nullptr) {
    unhandled_->Add();
    return false;
  }
  device->Write(offset, data);
  return true;
}

}  // namespace ember::vmm
