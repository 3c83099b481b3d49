/* The kernel's vsock constants, for vsock_device_test.cc (kept in C like the other uapi
   value files so every uapi header is read the same way). */
#include <stddef.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_vsock.h>

const unsigned kUapiVsockHdrSize = sizeof(struct virtio_vsock_hdr);
const unsigned kUapiVsockHdrLenOffset = offsetof(struct virtio_vsock_hdr, len);
const unsigned kUapiVsockHdrOpOffset = offsetof(struct virtio_vsock_hdr, op);
const unsigned kUapiVsockHdrFwdCntOffset = offsetof(struct virtio_vsock_hdr, fwd_cnt);
const unsigned kUapiVsockTypeStream = VIRTIO_VSOCK_TYPE_STREAM;
const unsigned kUapiVsockOpRequest = VIRTIO_VSOCK_OP_REQUEST;
const unsigned kUapiVsockOpCreditRequest = VIRTIO_VSOCK_OP_CREDIT_REQUEST;
const unsigned kUapiVsockShutdownRcv = VIRTIO_VSOCK_SHUTDOWN_RCV;
const unsigned kUapiVsockShutdownSend = VIRTIO_VSOCK_SHUTDOWN_SEND;
const unsigned kUapiVsockEventTransportReset = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET;
const unsigned kUapiVirtioIdVsock = VIRTIO_ID_VSOCK;
