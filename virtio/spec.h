#pragma once

// Constants of the virtio 1.x specification that Ember's devices and transports share.
// Kept as typed constants (not the uapi macros) so -Wconversion stays quiet; the unit tests
// check every value against <linux/virtio_*.h>.

#include <bit>
#include <cstdint>

namespace ember::virtio {

static_assert(std::endian::native == std::endian::little,
              "virtio 1.x structures are little-endian; Ember reads them in place");

// Device status bits (spec 2.1).
inline constexpr std::uint32_t kStatusAcknowledge = 1;
inline constexpr std::uint32_t kStatusDriver = 2;
inline constexpr std::uint32_t kStatusDriverOk = 4;
inline constexpr std::uint32_t kStatusFeaturesOk = 8;
inline constexpr std::uint32_t kStatusNeedsReset = 0x40;
inline constexpr std::uint32_t kStatusFailed = 0x80;

// Reserved feature bits (spec 6).
inline constexpr unsigned kFeatureIndirectDesc = 28;
inline constexpr unsigned kFeatureEventIdx = 29;
inline constexpr unsigned kFeatureVersion1 = 32;
inline constexpr unsigned kFeatureAccessPlatform = 33;
inline constexpr unsigned kFeatureRingPacked = 34;

[[nodiscard]] constexpr std::uint64_t FeatureBit(unsigned bit) { return std::uint64_t{1} << bit; }

// Split virtqueue flags (spec 2.7).
inline constexpr std::uint16_t kDescFlagNext = 1;
inline constexpr std::uint16_t kDescFlagWrite = 2;
inline constexpr std::uint16_t kDescFlagIndirect = 4;
inline constexpr std::uint16_t kAvailFlagNoInterrupt = 1;
inline constexpr std::uint16_t kUsedFlagNoNotify = 1;

// The largest queue the split ring format can describe.
inline constexpr std::uint16_t kMaxQueueSize = 32768;

// Device IDs (spec 5).
inline constexpr std::uint32_t kDeviceIdNet = 1;
inline constexpr std::uint32_t kDeviceIdBlock = 2;
inline constexpr std::uint32_t kDeviceIdVsock = 19;

// InterruptStatus bits of the MMIO transport (spec 4.2.2).
inline constexpr std::uint32_t kInterruptUsedBuffer = 1;
inline constexpr std::uint32_t kInterruptConfigChange = 2;

}  // namespace ember::virtio
