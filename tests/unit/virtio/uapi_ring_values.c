/* <linux/virtio_ring.h> is not valid C++, so spec_test.cc reads its values through here. */
#include <linux/virtio_ring.h>

const unsigned kUapiDescFlagNext = VRING_DESC_F_NEXT;
const unsigned kUapiDescFlagWrite = VRING_DESC_F_WRITE;
const unsigned kUapiDescFlagIndirect = VRING_DESC_F_INDIRECT;
const unsigned kUapiAvailFlagNoInterrupt = VRING_AVAIL_F_NO_INTERRUPT;
const unsigned kUapiUsedFlagNoNotify = VRING_USED_F_NO_NOTIFY;
const unsigned kUapiFeatureIndirectDesc = VIRTIO_RING_F_INDIRECT_DESC;
const unsigned kUapiFeatureEventIdx = VIRTIO_RING_F_EVENT_IDX;
