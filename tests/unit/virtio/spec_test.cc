// Ember spells the spec's constants itself; this pins each to the kernel's uapi value.
#include "virtio/spec.h"

#include <gtest/gtest.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>

extern "C" {
extern const unsigned kUapiDescFlagNext;
extern const unsigned kUapiDescFlagWrite;
extern const unsigned kUapiDescFlagIndirect;
extern const unsigned kUapiAvailFlagNoInterrupt;
extern const unsigned kUapiUsedFlagNoNotify;
extern const unsigned kUapiFeatureIndirectDesc;
extern const unsigned kUapiFeatureEventIdx;
}

namespace ember::virtio {
namespace {

TEST(VirtioSpec, StatusBitsMatchUapi) {
  EXPECT_EQ(kStatusAcknowledge, VIRTIO_CONFIG_S_ACKNOWLEDGE);
  EXPECT_EQ(kStatusDriver, VIRTIO_CONFIG_S_DRIVER);
  EXPECT_EQ(kStatusDriverOk, VIRTIO_CONFIG_S_DRIVER_OK);
  EXPECT_EQ(kStatusFeaturesOk, VIRTIO_CONFIG_S_FEATURES_OK);
  EXPECT_EQ(kStatusNeedsReset, VIRTIO_CONFIG_S_NEEDS_RESET);
  EXPECT_EQ(kStatusFailed, VIRTIO_CONFIG_S_FAILED);
}

TEST(VirtioSpec, FeatureBitsMatchUapi) {
  EXPECT_EQ(kFeatureIndirectDesc, kUapiFeatureIndirectDesc);
  EXPECT_EQ(kFeatureEventIdx, kUapiFeatureEventIdx);
  EXPECT_EQ(kFeatureVersion1, VIRTIO_F_VERSION_1);
  EXPECT_EQ(kFeatureAccessPlatform, VIRTIO_F_ACCESS_PLATFORM);
  EXPECT_EQ(kFeatureRingPacked, VIRTIO_F_RING_PACKED);
}

TEST(VirtioSpec, RingFlagsMatchUapi) {
  EXPECT_EQ(kDescFlagNext, kUapiDescFlagNext);
  EXPECT_EQ(kDescFlagWrite, kUapiDescFlagWrite);
  EXPECT_EQ(kDescFlagIndirect, kUapiDescFlagIndirect);
  EXPECT_EQ(kAvailFlagNoInterrupt, kUapiAvailFlagNoInterrupt);
  EXPECT_EQ(kUsedFlagNoNotify, kUapiUsedFlagNoNotify);
}

TEST(VirtioSpec, DeviceIdsAndInterruptBitsMatchUapi) {
  EXPECT_EQ(kDeviceIdNet, VIRTIO_ID_NET);
  EXPECT_EQ(kDeviceIdBlock, VIRTIO_ID_BLOCK);
  EXPECT_EQ(kDeviceIdVsock, VIRTIO_ID_VSOCK);
  EXPECT_EQ(kInterruptUsedBuffer, VIRTIO_MMIO_INT_VRING);
  EXPECT_EQ(kInterruptConfigChange, VIRTIO_MMIO_INT_CONFIG);
}

}  // namespace
}  // namespace ember::virtio
