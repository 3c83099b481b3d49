#pragma once

#include <cstdint>

// Register map of the modern (version 2) virtio-mmio transport (spec 4.2.2), shared by the
// transport and the fake driver that tests it.
namespace ember::virtio::mmio {

inline constexpr std::uint64_t kMagicValue = 0x000;
inline constexpr std::uint64_t kVersion = 0x004;
inline constexpr std::uint64_t kDeviceId = 0x008;
inline constexpr std::uint64_t kVendorId = 0x00c;
inline constexpr std::uint64_t kDeviceFeatures = 0x010;
inline constexpr std::uint64_t kDeviceFeaturesSel = 0x014;
inline constexpr std::uint64_t kDriverFeatures = 0x020;
inline constexpr std::uint64_t kDriverFeaturesSel = 0x024;
inline constexpr std::uint64_t kQueueSel = 0x030;
inline constexpr std::uint64_t kQueueNumMax = 0x034;
inline constexpr std::uint64_t kQueueNum = 0x038;
inline constexpr std::uint64_t kQueueReady = 0x044;
inline constexpr std::uint64_t kQueueNotify = 0x050;
inline constexpr std::uint64_t kInterruptStatus = 0x060;
inline constexpr std::uint64_t kInterruptAck = 0x064;
inline constexpr std::uint64_t kStatus = 0x070;
inline constexpr std::uint64_t kQueueDescLow = 0x080;
inline constexpr std::uint64_t kQueueDescHigh = 0x084;
inline constexpr std::uint64_t kQueueDriverLow = 0x090;
inline constexpr std::uint64_t kQueueDriverHigh = 0x094;
inline constexpr std::uint64_t kQueueDeviceLow = 0x0a0;
inline constexpr std::uint64_t kQueueDeviceHigh = 0x0a4;
inline constexpr std::uint64_t kShmSel = 0x0ac;
inline constexpr std::uint64_t kShmLenLow = 0x0b0;
inline constexpr std::uint64_t kShmLenHigh = 0x0b4;
inline constexpr std::uint64_t kShmBaseLow = 0x0b8;
inline constexpr std::uint64_t kShmBaseHigh = 0x0bc;
inline constexpr std::uint64_t kConfigGeneration = 0x0fc;
inline constexpr std::uint64_t kConfig = 0x100;

inline constexpr std::uint32_t kMagic = 0x74726976;  // "virt"
inline constexpr std::uint32_t kVersion2 = 2;

}  // namespace ember::virtio::mmio
