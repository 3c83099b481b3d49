/* Driver side of a split virtqueue (virtio 1.x spec 2.7), small enough for the test guest:
 * a free list of descriptors, no indirect descriptors, no EVENT_IDX. The guest runs with
 * identity-mapped memory, so a pointer is its own guest-physical address. */
#pragma once

#include <stdint.h>

/* Enough for a few requests in flight; devices offer more and accept any smaller size. */
#define VIRTQ_MAX_SIZE 16

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2

struct virtq_desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

struct virtq_avail {
  uint16_t flags;
  uint16_t idx;
  uint16_t ring[VIRTQ_MAX_SIZE];
  uint16_t used_event; /* unused: EVENT_IDX is not negotiated */
};

struct virtq_used_elem {
  uint32_t id;
  uint32_t len;
};

struct virtq_used {
  uint16_t flags;
  uint16_t idx;
  struct virtq_used_elem ring[VIRTQ_MAX_SIZE];
  uint16_t avail_event;
};

/* One queue: the three areas the device reads (each at its spec alignment: 16, 2 and 4)
 * followed by the driver's bookkeeping. Lives in .bss; the page alignment keeps it from
 * sharing a page with anything the device has no business with. */
struct virtq {
  struct virtq_desc desc[VIRTQ_MAX_SIZE] __attribute__((aligned(16)));
  struct virtq_avail avail __attribute__((aligned(2)));
  struct virtq_used used __attribute__((aligned(4)));
  uint16_t size;      /* as told to the device: <= VIRTQ_MAX_SIZE */
  uint16_t free_head; /* first descriptor of the free list, chained through .next */
  uint16_t num_free;
  uint16_t last_used; /* used.idx up to which completions were collected */
} __attribute__((aligned(4096)));

/* One buffer of a chain: `device_writes` marks it device-writable (VIRTQ_DESC_F_WRITE). */
struct virtq_buf {
  const void *addr;
  uint32_t len;
  int device_writes;
};

/* Empties the queue and makes every descriptor free; size <= VIRTQ_MAX_SIZE. */
void virtq_init(struct virtq *q, uint16_t size);

/* Chains `n` buffers (readable ones first, as the spec requires) and makes the chain
 * available. Returns its head descriptor, or -1 when too few descriptors are free. The
 * device only learns of it at the next notify. */
int virtq_add(struct virtq *q, const struct virtq_buf *bufs, int n);

/* Whether the device has returned a chain not yet collected. */
int virtq_has_used(const struct virtq *q);

/* Collects the next returned chain: returns its head and stores the bytes the device wrote
 * in *len; frees its descriptors. Returns -1 when there is none, or when the device
 * returned a head that is no descriptor (then that element is skipped). */
int virtq_get_used(struct virtq *q, uint32_t *len);

/* Chains made available and not collected yet. */
uint16_t virtq_in_flight(const struct virtq *q);
