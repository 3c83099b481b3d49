/* Driver side of virtio-blk (virtio 1.x spec 5.2) over virtio-mmio: one request queue,
 * requests queued in batches and completed by polling. */
#pragma once

#include <stdint.h>

#include "virtio_mmio.h"
#include "virtqueue.h"

#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_FLUSH 9

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_SECTOR_SIZE 512

/* The request header the device reads (spec 5.2.6). */
struct virtio_blk_req_header {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};

/* One data buffer of a request; the request's type decides the direction. */
struct virtio_blk_seg {
  void *addr;
  uint32_t len;
};

/* A driven block device. Make it static (the queue inside must not live on the stack). */
struct virtio_blk {
  struct virtq vq;
  struct virtio_mmio_dev dev;
  uint64_t capacity; /* in 512-byte sectors, from the config space */
  /* Per head descriptor: the header and status byte of the request that uses it. */
  struct {
    struct virtio_blk_req_header header;
    uint8_t status;
    uint32_t used_len;
  } reqs[VIRTQ_MAX_SIZE];
};

/* Finds the first virtio-blk device on the command line and brings it to DRIVER_OK with
 * VIRTIO_F_VERSION_1, plus RO and FLUSH when offered. Returns 1, or 0 with *reason set. */
int virtio_blk_init(struct virtio_blk *blk, const char *cmdline, const char **reason);

/* The second half of virtio_blk_init, for a driver that found the device and negotiated its
 * features (blk->dev.features) itself: queue set-up, DRIVER_OK, capacity. */
int virtio_blk_start(struct virtio_blk *blk, const char **reason);

static inline int virtio_blk_has(const struct virtio_blk *blk, unsigned feature) {
  return (blk->dev.features >> feature) & 1;
}

/* Queues one request without telling the device: header, the `n` data segments (device-
 * writable for IN and GET_ID), status byte. Returns its tag for virtio_blk_status, or -1
 * when the queue is full. */
int virtio_blk_queue(struct virtio_blk *blk, uint32_t type, uint64_t sector,
                     const struct virtio_blk_seg *data, int n);

/* Notifies the device and waits until every queued request completed. Returns 1, or 0 with
 * *reason set. */
int virtio_blk_complete(struct virtio_blk *blk, const char **reason);

/* A completed request's status byte (0xff if the device never wrote it) and the number of
 * bytes the device reported writing (data + status). */
static inline uint8_t virtio_blk_status(const struct virtio_blk *blk, int tag) {
  return *(const volatile uint8_t *)&blk->reqs[tag].status; /* the device wrote it */
}
static inline uint32_t virtio_blk_used_len(const struct virtio_blk *blk, int tag) {
  return blk->reqs[tag].used_len;
}

/* One request, queued and completed on its own. Returns its status byte, or -1 with
 * *reason set when it could not be queued or never completed. */
int virtio_blk_request(struct virtio_blk *blk, uint32_t type, uint64_t sector,
                       const struct virtio_blk_seg *data, int n, const char **reason);
