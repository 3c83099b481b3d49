#include "virtio/testing/fake_mmio_driver.h"

#include <cstring>
#include <span>

#include "absl/strings/str_format.h"
#include "virtio/mmio/registers.h"
#include "virtio/spec.h"

namespace ember::virtio::testing {
using namespace mmio;  // the register map

std::uint32_t FakeMmioDriver::Read32(std::uint64_t offset) const {
  std::uint32_t value = 0;
  // A register is a little-endian u32 on the bus; x86 is little-endian too.
  transport_->Read(offset, std::span(reinterpret_cast<std::uint8_t*>(&value), sizeof(value)));
  return value;
}

void FakeMmioDriver::Write32(std::uint64_t offset, std::uint32_t value) const {
  transport_->Write(offset,
                    std::span(reinterpret_cast<const std::uint8_t*>(&value), sizeof(value)));
}

std::uint64_t FakeMmioDriver::DeviceFeatures() const {
  Write32(kDeviceFeaturesSel, 0);
  std::uint64_t features = Read32(kDeviceFeatures);
  Write32(kDeviceFeaturesSel, 1);
  return features | (std::uint64_t{Read32(kDeviceFeatures)} << 32);
}

void FakeMmioDriver::WriteDriverFeatures(std::uint64_t features) const {
  Write32(kDriverFeaturesSel, 0);
  Write32(kDriverFeatures, static_cast<std::uint32_t>(features));
  Write32(kDriverFeaturesSel, 1);
  Write32(kDriverFeatures, static_cast<std::uint32_t>(features >> 32));
}

void FakeMmioDriver::SetUpQueue(std::uint32_t index, const QueueLayout& layout) const {
  Write32(kQueueSel, index);
  Write32(kQueueNum, layout.size);
  const std::pair<std::uint64_t, std::uint64_t> addresses[] = {
      {kQueueDescLow, layout.desc_table},
      {kQueueDriverLow, layout.avail_ring},
      {kQueueDeviceLow, layout.used_ring}};
  for (const auto& [reg, addr] : addresses) {
    Write32(reg, static_cast<std::uint32_t>(addr));
    Write32(reg + 4, static_cast<std::uint32_t>(addr >> 32));
  }
  Write32(kQueueReady, 1);
}

absl::Status FakeMmioDriver::Initialize(std::uint64_t features,
                                        const std::vector<QueueLayout>& queues) const {
  if (Read32(kMagicValue) != kMagic || Read32(kVersion) != kVersion2) {
    return absl::FailedPreconditionError("not a version 2 virtio-mmio device");
  }
  Write32(kStatus, 0);
  Write32(kStatus, kStatusAcknowledge);
  Write32(kStatus, kStatusAcknowledge | kStatusDriver);
  const std::uint64_t offered = DeviceFeatures();
  if ((features & ~offered) != 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("device does not offer features 0x%x", features & ~offered));
  }
  WriteDriverFeatures(features);
  Write32(kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  if ((Read32(kStatus) & kStatusFeaturesOk) == 0) {
    return absl::FailedPreconditionError("device refused FEATURES_OK");
  }
  for (std::uint32_t i = 0; i < queues.size(); ++i) {
    Write32(kQueueSel, i);
    if (Read32(kQueueReady) != 0) return absl::FailedPreconditionError("queue already ready");
    if (Read32(kQueueNumMax) < queues[i].size) {
      return absl::FailedPreconditionError(absl::StrFormat("queue %u is too large", i));
    }
    SetUpQueue(i, queues[i]);
  }
  Write32(kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  const std::uint32_t status = Read32(kStatus);
  if ((status & kStatusDriverOk) == 0 || (status & kStatusNeedsReset) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat("device status 0x%x after DRIVER_OK",
                                                         status));
  }
  return absl::OkStatus();
}

}  // namespace ember::virtio::testing
