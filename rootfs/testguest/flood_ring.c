#include "flood_ring.h"

#include "lib.h"

int flood_ring_setup(struct virtio_mmio_dev *dev, uint32_t index, struct flood_ring *r,
                     const char **reason) {
  uint16_t size = virtio_mmio_queue_size(dev, index, FLOOD_RING_MAX, reason);
  if (size == 0) return 0;
  memset(r, 0, sizeof(*r));
  r->size = size;
  virtio_mmio_give_queue(dev, index, size, r->desc, &r->avail, &r->used);
  return 1;
}
