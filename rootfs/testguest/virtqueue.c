#include "virtqueue.h"

#include "io.h"
#include "lib.h"

void virtq_init(struct virtq *q, uint16_t size) {
  memset(q, 0, sizeof(*q));
  q->size = size;
  q->num_free = size;
  for (uint16_t i = 0; i + 1 < size; i++) q->desc[i].next = (uint16_t)(i + 1);
}

int virtq_add(struct virtq *q, const struct virtq_buf *bufs, int n) {
  if (n <= 0 || n > q->num_free) return -1;
  uint16_t head = q->free_head;
  uint16_t last = head;
  uint16_t i = head;
  for (int b = 0; b < n; b++) {
    struct virtq_desc *d = &q->desc[i];
    d->addr = (uint64_t)bufs[b].addr;
    d->len = bufs[b].len;
    d->flags = (uint16_t)((bufs[b].device_writes ? VIRTQ_DESC_F_WRITE : 0) |
                          (b + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
    last = i;
    i = d->next; /* the free list's link becomes the chain's link */
  }
  q->free_head = q->desc[last].next;
  q->num_free = (uint16_t)(q->num_free - n);

  q->avail.ring[q->avail.idx % q->size] = head;
  /* The device may read the ring entry as soon as it sees the new index. */
  compiler_barrier();
  *(volatile uint16_t *)&q->avail.idx = (uint16_t)(q->avail.idx + 1);
  return head;
}

int virtq_has_used(const struct virtq *q) {
  return *(const volatile uint16_t *)&q->used.idx != q->last_used;
}

int virtq_get_used(struct virtq *q, uint32_t *len) {
  if (!virtq_has_used(q)) return -1;
  /* Read the element only after seeing the index that publishes it. */
  compiler_barrier();
  const volatile struct virtq_used_elem *e = &q->used.ring[q->last_used % q->size];
  uint32_t head = e->id;
  *len = e->len;
  q->last_used++;
  if (head >= q->size) return -1;

  uint16_t i = (uint16_t)head;
  uint16_t freed = 1;
  while (q->desc[i].flags & VIRTQ_DESC_F_NEXT) {
    i = q->desc[i].next;
    freed++;
  }
  q->desc[i].next = q->free_head;
  q->free_head = (uint16_t)head;
  q->num_free = (uint16_t)(q->num_free + freed);
  return (int)head;
}

uint16_t virtq_in_flight(const struct virtq *q) { return (uint16_t)(q->avail.idx - q->last_used); }
