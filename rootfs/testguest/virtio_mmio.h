/* Driver side of the modern (version 2) virtio-mmio transport, virtio 1.x spec 4.2.2.
 * Devices are found the way Linux finds them: one `virtio_mmio.device=<size>@<base>:<gsi>`
 * token per device on the command line. The guest polls; it never takes interrupts. */
#pragma once

#include <stdint.h>

#include "io.h"
#include "virtqueue.h"

#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_VSOCK 19

#define VIRTIO_F_VERSION_1 32

/* Register offsets (spec 4.2.2). */
#define VIRTIO_MMIO_MAGIC_VALUE 0x000
#define VIRTIO_MMIO_VERSION 0x004
#define VIRTIO_MMIO_DEVICE_ID 0x008
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW 0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIRTIO_MMIO_CONFIG 0x100

#define VIRTIO_MMIO_MAGIC 0x74726976 /* "virt" */

/* Device status bits (spec 2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

#define VIRTIO_INTERRUPT_USED_BUFFER 1

struct virtio_mmio_dev {
  uint64_t base;
  uint64_t size;
  uint32_t gsi;
  uint32_t device_id;
  uint64_t features; /* negotiated, valid after virtio_mmio_negotiate */
};

/* Finds the first announced device with `device_id` that answers with the virtio magic and
 * version 2. Returns 1, or 0 with *reason set. */
int virtio_mmio_find(const char *cmdline, uint32_t device_id, struct virtio_mmio_dev *dev,
                     const char **reason);

/* Features every later virtio_mmio_negotiate also takes when offered, beside its `optional`:
 * for a scenario that brings a device up through its usual driver with one feature more
 * (attack.c negotiates VIRTIO_F_INDIRECT_DESC so). 0 normally. */
extern uint64_t virtio_mmio_extra_optional;

/* Resets the device and negotiates: VIRTIO_F_VERSION_1 and `required` must be offered,
 * `optional` is taken when offered. Ends with FEATURES_OK accepted, ready for queue set-up.
 * Returns 1, or 0 with *reason set (and FAILED written to the status). */
int virtio_mmio_negotiate(struct virtio_mmio_dev *dev, uint64_t required, uint64_t optional,
                          const char **reason);

/* Gives queue `index` to the device; the queue's size is min(QueueNumMax, VIRTQ_MAX_SIZE).
 * Call between virtio_mmio_negotiate and virtio_mmio_driver_ok. */
int virtio_mmio_setup_queue(struct virtio_mmio_dev *dev, uint32_t index, struct virtq *q,
                            const char **reason);

/* The two halves of virtio_mmio_setup_queue, for scenarios that lay out a ring of their
 * own: the size to use for queue `index` (min(QueueNumMax, limit); 0 with *reason set and
 * FAILED written when the queue is in use or absent), then handing the ring's three areas
 * (guest-physical = identity-mapped addresses) to the device and enabling the queue. */
uint16_t virtio_mmio_queue_size(struct virtio_mmio_dev *dev, uint32_t index, uint16_t limit,
                                const char **reason);
void virtio_mmio_give_queue(struct virtio_mmio_dev *dev, uint32_t index, uint16_t size,
                            const void *desc, const void *avail, const void *used);

/* Sets DRIVER_OK; fails when the device refused activation (NEEDS_RESET set). */
int virtio_mmio_driver_ok(struct virtio_mmio_dev *dev, const char **reason);

/* Tells the device queue `index` has new available buffers. */
void virtio_mmio_notify(const struct virtio_mmio_dev *dev, uint32_t index);

/* Waits (a bounded number of polls) until the queue has a used buffer, then checks the
 * device raised the used-buffer interrupt status and acknowledges it, so it keeps
 * signalling. Returns 1, or 0 with *reason set. */
int virtio_mmio_wait_used(const struct virtio_mmio_dev *dev, struct virtq *q, const char **reason);

/* Raw register access, for scenarios that drive the transport out of the usual order. */
static inline uint32_t virtio_mmio_read(const struct virtio_mmio_dev *dev, uint32_t reg) {
  return mmio_read32(dev->base + reg);
}
static inline void virtio_mmio_write(const struct virtio_mmio_dev *dev, uint32_t reg,
                                     uint32_t value) {
  mmio_write32(dev->base + reg, value);
}

static inline uint32_t virtio_mmio_config32(const struct virtio_mmio_dev *dev, uint32_t offset) {
  return *(volatile uint32_t *)(dev->base + VIRTIO_MMIO_CONFIG + offset);
}
