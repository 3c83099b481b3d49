/* A split virtqueue for the hostile scenarios, which make the same chain available over and
 * over: as large as the device allows (up to FLOOD_RING_MAX, so that one store to avail.idx
 * publishes a hundred requests), with no free list, since the scenario lays out its few chains
 * by hand and only ever moves avail.idx. */
#pragma once

#include <stdint.h>

#include "io.h"
#include "virtio_mmio.h"
#include "virtqueue.h"

#define FLOOD_RING_MAX 256
#define VIRTQ_USED_F_NO_NOTIFY 1

struct flood_ring {
  struct virtq_desc desc[FLOOD_RING_MAX] __attribute__((aligned(16)));
  struct {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[FLOOD_RING_MAX];
    uint16_t used_event;
  } avail __attribute__((aligned(2)));
  struct {
    uint16_t flags;
    uint16_t idx;
    struct virtq_used_elem ring[FLOOD_RING_MAX];
    uint16_t avail_event;
  } used __attribute__((aligned(4)));
  uint16_t size; /* as told to the device: a power of two <= FLOOD_RING_MAX */
} __attribute__((aligned(4096)));

/* Clears the ring and gives it to the device as queue `index` (between FEATURES_OK and
 * DRIVER_OK). Every available entry names head 0 until the scenario says otherwise.
 * Returns 1, or 0 with *reason set. */
int flood_ring_setup(struct virtio_mmio_dev *dev, uint32_t index, struct flood_ring *r,
                     const char **reason);

/* Makes the next `count` entries of the available ring visible to the device at once. */
static inline void flood_ring_publish(struct flood_ring *r, uint16_t count) {
  compiler_barrier(); /* descriptors and ring entries before the index that publishes them */
  *(volatile uint16_t *)&r->avail.idx = (uint16_t)(r->avail.idx + count);
}

static inline uint16_t flood_ring_used_idx(const struct flood_ring *r) {
  return *(const volatile uint16_t *)&r->used.idx;
}

/* Notifies queue `index` unless the device said it is polling the ring anyway. */
static inline void flood_ring_kick(const struct virtio_mmio_dev *dev, uint32_t index,
                                   const struct flood_ring *r) {
  if (!(*(const volatile uint16_t *)&r->used.flags & VIRTQ_USED_F_NO_NOTIFY))
    virtio_mmio_notify(dev, index);
}
