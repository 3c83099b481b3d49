/* Driver side of virtio-vsock (virtio 1.x spec 5.10) over virtio-mmio, small enough for the
 * test guest: stream packets of at most VSOCK_MAX_PAYLOAD bytes, each in one descriptor
 * (header and payload together), RX buffers re-posted as soon as they are read, TX sent one
 * packet at a time and waited for. */
#pragma once

#include <stdint.h>

#include "virtio_mmio.h"
#include "virtqueue.h"

/* The device's queues, in order. */
#define VSOCK_RX_QUEUE 0
#define VSOCK_TX_QUEUE 1
#define VSOCK_EVENT_QUEUE 2

#define VSOCK_HOST_CID 2
#define VSOCK_TYPE_STREAM 1

#define VSOCK_OP_REQUEST 1
#define VSOCK_OP_RESPONSE 2
#define VSOCK_OP_RST 3
#define VSOCK_OP_SHUTDOWN 4
#define VSOCK_OP_RW 5
#define VSOCK_OP_CREDIT_UPDATE 6
#define VSOCK_OP_CREDIT_REQUEST 7

#define VSOCK_SHUTDOWN_RCV 1
#define VSOCK_SHUTDOWN_SEND 2

#define VSOCK_EVENT_TRANSPORT_RESET 0

#define VSOCK_MAX_PAYLOAD 256
#define VSOCK_RX_BUFFERS 8
/* What the guest tells the host it can buffer per connection; it echoes (consumes) every
 * payload at once, so a small window is enough. */
#define VSOCK_BUF_ALLOC 4096

/* struct virtio_vsock_hdr (spec 5.10.6): 44 bytes, little-endian. */
struct vsock_hdr {
  uint64_t src_cid;
  uint64_t dst_cid;
  uint32_t src_port;
  uint32_t dst_port;
  uint32_t len;
  uint16_t type;
  uint16_t op;
  uint32_t flags;
  uint32_t buf_alloc;
  uint32_t fwd_cnt;
} __attribute__((packed));
_Static_assert(sizeof(struct vsock_hdr) == 44, "virtio_vsock_hdr is 44 bytes");

struct vsock_packet {
  struct vsock_hdr hdr;
  uint8_t payload[VSOCK_MAX_PAYLOAD];
} __attribute__((packed));

/* A driven vsock device. Make it static (the queues inside must not live on the stack). */
struct virtio_vsock {
  struct virtq rx;
  struct virtq tx;
  struct virtq ev;
  struct virtio_mmio_dev dev;
  uint64_t cid; /* from the config space */
  struct vsock_packet rx_bufs[VSOCK_RX_BUFFERS];
  struct vsock_packet *rx_by_head[VIRTQ_MAX_SIZE];
  struct vsock_packet tx_buf;
  uint32_t event; /* struct virtio_vsock_event */
};

/* Finds the first vsock device, brings it to DRIVER_OK and gives it every RX buffer and one
 * event buffer. Returns 1, or 0 with *reason set. */
int virtio_vsock_init(struct virtio_vsock *vs, const char *cmdline, const char **reason);

/* virtio_vsock_init without the buffers: the device at DRIVER_OK with empty queues, for a
 * scenario that posts RX buffers of its own (vs->rx) and sends with virtio_vsock_send. */
int virtio_vsock_open(struct virtio_vsock *vs, const char *cmdline, const char **reason);

/* The header of a stream packet from the guest to the host, every other field zero. */
struct vsock_hdr virtio_vsock_hdr(const struct virtio_vsock *vs, uint32_t src_port,
                                  uint32_t dst_port, uint16_t op, uint32_t len,
                                  uint32_t buf_alloc);

/* Sends one packet made of `n` device-readable buffers (header first) and waits until the
 * device took it. Returns 1, or 0 with *reason set. */
int virtio_vsock_send_bufs(struct virtio_vsock *vs, const struct virtq_buf *bufs, int n,
                           const char **reason);

/* Sends one packet to the host (header fields from the arguments, src_cid the guest's,
 * buf_alloc VSOCK_BUF_ALLOC) and waits until the device took it. Returns 1, or 0 with *reason
 * set. */
int virtio_vsock_send(struct virtio_vsock *vs, uint32_t src_port, uint32_t dst_port, uint16_t op,
                      uint32_t flags, uint32_t fwd_cnt, const void *payload, uint32_t len,
                      const char **reason);

/* The next packet the device sent, or 0 when none waits. The packet stays valid until the
 * next call, which gives its buffer back to the device. */
const struct vsock_packet *virtio_vsock_poll(struct virtio_vsock *vs);

/* Whether the device raised an event (it has only VSOCK_EVENT_TRANSPORT_RESET); re-posts the
 * event buffer. */
int virtio_vsock_poll_event(struct virtio_vsock *vs, uint32_t *id);
