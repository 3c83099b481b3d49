/* Driver side of virtio-net (virtio 1.x spec 5.1) over virtio-mmio, small enough for the test
 * guest: no offloads, no MRG_RXBUF, so every RX buffer holds a whole frame; frames are sent
 * one at a time and waited for. */
#pragma once

#include <stdint.h>

#include "virtio_mmio.h"
#include "virtqueue.h"

#define VIRTIO_NET_F_MAC 5

/* struct virtio_net_hdr_v1 (spec 5.1.6), all zero on TX: no checksum or GSO help wanted. */
#define VIRTIO_NET_HDR_BYTES 12
/* An Ethernet frame of a 1500-byte MTU with a VLAN tag, and its header. */
#define VIRTIO_NET_BUF_BYTES (VIRTIO_NET_HDR_BYTES + 1518)
#define VIRTIO_NET_RX_BUFFERS 8

/* A driven net device. Make it static (the queues inside must not live on the stack). */
struct virtio_net {
  struct virtq rx;
  struct virtq tx;
  struct virtio_mmio_dev dev;
  uint8_t mac[6]; /* from the config space when offered */
  uint8_t rx_bufs[VIRTIO_NET_RX_BUFFERS][VIRTIO_NET_BUF_BYTES];
  uint8_t *rx_by_head[VIRTQ_MAX_SIZE];
  uint8_t *lent; /* the RX buffer the last poll returned */
  uint8_t tx_buf[VIRTIO_NET_BUF_BYTES];
};

/* Finds the first net device, brings it to DRIVER_OK (VIRTIO_F_VERSION_1, and MAC when
 * offered; otherwise `default_mac` is used) and gives it every RX buffer. Returns 1, or 0
 * with *reason set. */
int virtio_net_init(struct virtio_net *net, const char *cmdline, const uint8_t default_mac[6],
                    const char **reason);

/* Sends one Ethernet frame and waits until the device took it. Returns 1, or 0 with *reason
 * set. */
int virtio_net_send(struct virtio_net *net, const uint8_t *frame, uint32_t len,
                    const char **reason);

/* The next received frame (without its virtio-net header) and its length, or 0 when none
 * waits. Valid until the next call, which gives its buffer back to the device. */
uint8_t *virtio_net_poll(struct virtio_net *net, uint32_t *len);
