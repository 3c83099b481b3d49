#include "virtio_blk.h"

/* Header, data segments, status: a request never needs more descriptors than the queue. */
#define MAX_SEGS (VIRTQ_MAX_SIZE - 2)
/* No request ever wrote this status; the device must overwrite it. */
#define STATUS_UNSET 0xff

int virtio_blk_init(struct virtio_blk *blk, const char *cmdline, const char **reason) {
  if (!virtio_mmio_find(cmdline, VIRTIO_ID_BLOCK, &blk->dev, reason)) return 0;
  uint64_t optional = (1ull << VIRTIO_BLK_F_RO) | (1ull << VIRTIO_BLK_F_FLUSH);
  if (!virtio_mmio_negotiate(&blk->dev, 0, optional, reason)) return 0;
  return virtio_blk_start(blk, reason);
}

int virtio_blk_start(struct virtio_blk *blk, const char **reason) {
  if (!virtio_mmio_setup_queue(&blk->dev, 0, &blk->vq, reason)) return 0;
  if (!virtio_mmio_driver_ok(&blk->dev, reason)) return 0;
  /* capacity: the config space's first field, a u64 read as two registers. */
  uint64_t high = virtio_mmio_config32(&blk->dev, 4);
  blk->capacity = high << 32 | virtio_mmio_config32(&blk->dev, 0);
  return 1;
}

int virtio_blk_queue(struct virtio_blk *blk, uint32_t type, uint64_t sector,
                     const struct virtio_blk_seg *data, int n) {
  if (n < 0 || n > MAX_SEGS || n + 2 > blk->vq.num_free) return -1;
  /* The head descriptor is the free list's first: its slot holds this request's header. */
  uint16_t tag = blk->vq.free_head;
  blk->reqs[tag].header.type = type;
  blk->reqs[tag].header.reserved = 0;
  blk->reqs[tag].header.sector = sector;
  blk->reqs[tag].status = STATUS_UNSET;
  blk->reqs[tag].used_len = 0;

  int device_writes = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
  struct virtq_buf bufs[MAX_SEGS + 2];
  bufs[0] = (struct virtq_buf){&blk->reqs[tag].header, sizeof(blk->reqs[tag].header), 0};
  for (int i = 0; i < n; i++)
    bufs[1 + i] = (struct virtq_buf){data[i].addr, data[i].len, device_writes};
  bufs[n + 1] = (struct virtq_buf){&blk->reqs[tag].status, 1, 1};
  return virtq_add(&blk->vq, bufs, n + 2);
}

int virtio_blk_complete(struct virtio_blk *blk, const char **reason) {
  virtio_mmio_notify(&blk->dev, 0);
  while (virtq_in_flight(&blk->vq)) {
    if (!virtio_mmio_wait_used(&blk->dev, &blk->vq, reason)) return 0;
    uint32_t len;
    int head;
    while (virtq_has_used(&blk->vq)) {
      if ((head = virtq_get_used(&blk->vq, &len)) < 0) {
        *reason = "device returned an unknown descriptor";
        return 0;
      }
      blk->reqs[head].used_len = len;
    }
  }
  return 1;
}

int virtio_blk_request(struct virtio_blk *blk, uint32_t type, uint64_t sector,
                       const struct virtio_blk_seg *data, int n, const char **reason) {
  int tag = virtio_blk_queue(blk, type, sector, data, n);
  if (tag < 0) {
    *reason = "request does not fit the queue";
    return -1;
  }
  if (!virtio_blk_complete(blk, reason)) return -1;
  return virtio_blk_status(blk, tag);
}
