/* <linux/virtio_net.h> is not valid C++, so net_config_test.cc reads its values through here. */
#include <linux/virtio_net.h>

const unsigned kUapiNetFCsum = VIRTIO_NET_F_CSUM;
const unsigned kUapiNetFGuestCsum = VIRTIO_NET_F_GUEST_CSUM;
const unsigned kUapiNetFMac = VIRTIO_NET_F_MAC;
const unsigned kUapiNetFGuestTso4 = VIRTIO_NET_F_GUEST_TSO4;
const unsigned kUapiNetFGuestTso6 = VIRTIO_NET_F_GUEST_TSO6;
const unsigned kUapiNetFGuestUfo = VIRTIO_NET_F_GUEST_UFO;
const unsigned kUapiNetFHostTso4 = VIRTIO_NET_F_HOST_TSO4;
const unsigned kUapiNetFHostTso6 = VIRTIO_NET_F_HOST_TSO6;
const unsigned kUapiNetFHostUfo = VIRTIO_NET_F_HOST_UFO;
const unsigned kUapiNetFMrgRxbuf = VIRTIO_NET_F_MRG_RXBUF;
const unsigned kUapiNetFStatus = VIRTIO_NET_F_STATUS;
const unsigned kUapiNetHdrV1Size = sizeof(struct virtio_net_hdr_v1);
const unsigned kUapiNetHdrNumBuffersOffset = __builtin_offsetof(struct virtio_net_hdr_v1, num_buffers);
const unsigned kUapiNetGsoTcpV4 = VIRTIO_NET_HDR_GSO_TCPV4;
const unsigned kUapiNetGsoTcpV6 = VIRTIO_NET_HDR_GSO_TCPV6;
const unsigned kUapiNetGsoUdp = VIRTIO_NET_HDR_GSO_UDP;
const unsigned kUapiNetFlagNeedsCsum = VIRTIO_NET_HDR_F_NEEDS_CSUM;
const unsigned kUapiNetFlagDataValid = VIRTIO_NET_HDR_F_DATA_VALID;
