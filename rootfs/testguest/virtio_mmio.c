#include "virtio_mmio.h"

#include "boot_info.h"
#include "io.h"

/* Polls of used.idx before giving up. Each costs a few emulated instructions (~µs here),
 * so this allows seconds for a request the host serves in well under a millisecond. */
#define WAIT_POLLS 3000000u
/* Reads of InterruptStatus after a used buffer appeared: the device updates the ring
 * first and raises the status right after, on its own thread. */
#define INTERRUPT_POLLS 20000u

static uint32_t rd(const struct virtio_mmio_dev *dev, uint32_t reg) {
  return mmio_read32(dev->base + reg);
}

static void wr(const struct virtio_mmio_dev *dev, uint32_t reg, uint32_t value) {
  mmio_write32(dev->base + reg, value);
}

/* Parses a number as the kernel's memparse does, for what the VMM writes: decimal or 0x-hex,
 * optionally followed by K or M. Returns the first character not consumed. */
static const char *parse_number(const char *p, const char *end, uint64_t *value) {
  uint64_t v = 0;
  if (end - p > 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
    for (p += 2; p < end; p++) {
      char c = *p;
      uint64_t digit;
      if (c >= '0' && c <= '9')
        digit = (uint64_t)(c - '0');
      else if (c >= 'a' && c <= 'f')
        digit = (uint64_t)(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        digit = (uint64_t)(c - 'A' + 10);
      else
        break;
      v = v * 16 + digit;
    }
  } else {
    for (; p < end && *p >= '0' && *p <= '9'; p++) v = v * 10 + (uint64_t)(*p - '0');
  }
  if (p < end && (*p == 'K' || *p == 'k')) {
    v <<= 10;
    p++;
  } else if (p < end && (*p == 'M' || *p == 'm')) {
    v <<= 20;
    p++;
  }
  *value = v;
  return p;
}

/* `<size>@<base>:<gsi>`, as drivers/virtio/virtio_mmio.c's vm_cmdline_set parses it. */
static int parse_device(const char *p, uint64_t len, struct virtio_mmio_dev *dev) {
  const char *end = p + len;
  uint64_t gsi;
  p = parse_number(p, end, &dev->size);
  if (p >= end || *p++ != '@') return 0;
  p = parse_number(p, end, &dev->base);
  if (p >= end || *p++ != ':') return 0;
  p = parse_number(p, end, &gsi);
  dev->gsi = (uint32_t)gsi;
  return p == end && dev->size >= 0x200 && dev->base != 0;
}

int virtio_mmio_find(const char *cmdline, uint32_t device_id, struct virtio_mmio_dev *dev,
                     const char **reason) {
  const char *cursor = cmdline;
  const char *value;
  uint64_t len;
  *reason = "no virtio_mmio.device= of the wanted type on the command line";
  while ((value = cmdline_next_value(&cursor, "virtio_mmio.device", &len))) {
    if (!parse_device(value, len, dev)) {
      *reason = "malformed virtio_mmio.device= token";
      return 0;
    }
    if (rd(dev, VIRTIO_MMIO_MAGIC_VALUE) != VIRTIO_MMIO_MAGIC) {
      *reason = "announced device has no virtio magic value";
      return 0;
    }
    if (rd(dev, VIRTIO_MMIO_VERSION) != 2) {
      *reason = "announced device is not virtio-mmio version 2";
      return 0;
    }
    dev->device_id = rd(dev, VIRTIO_MMIO_DEVICE_ID);
    if (dev->device_id == device_id) return 1;
  }
  return 0;
}

static int fail(struct virtio_mmio_dev *dev, const char *why, const char **reason) {
  wr(dev, VIRTIO_MMIO_STATUS, rd(dev, VIRTIO_MMIO_STATUS) | VIRTIO_STATUS_FAILED);
  *reason = why;
  return 0;
}

uint64_t virtio_mmio_extra_optional;

int virtio_mmio_negotiate(struct virtio_mmio_dev *dev, uint64_t required, uint64_t optional,
                          const char **reason) {
  optional |= virtio_mmio_extra_optional;
  /* The initialisation sequence of spec 3.1.1. */
  wr(dev, VIRTIO_MMIO_STATUS, 0);
  if (rd(dev, VIRTIO_MMIO_STATUS) != 0) return fail(dev, "device did not reset", reason);
  uint32_t status = VIRTIO_STATUS_ACKNOWLEDGE;
  wr(dev, VIRTIO_MMIO_STATUS, status);
  status |= VIRTIO_STATUS_DRIVER;
  wr(dev, VIRTIO_MMIO_STATUS, status);

  wr(dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
  uint64_t offered = rd(dev, VIRTIO_MMIO_DEVICE_FEATURES);
  wr(dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
  offered |= (uint64_t)rd(dev, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
  required |= 1ull << VIRTIO_F_VERSION_1;
  if ((offered & required) != required) {
    return fail(dev, "device does not offer VIRTIO_F_VERSION_1 or a required feature", reason);
  }
  dev->features = required | (offered & optional);

  wr(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
  wr(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)dev->features);
  wr(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
  wr(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(dev->features >> 32));
  status |= VIRTIO_STATUS_FEATURES_OK;
  wr(dev, VIRTIO_MMIO_STATUS, status);
  /* The device leaves FEATURES_OK clear when it rejects the subset (spec 3.1.1 step 6). */
  if (!(rd(dev, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
    return fail(dev, "device rejected the negotiated features", reason);
  }
  return 1;
}

uint16_t virtio_mmio_queue_size(struct virtio_mmio_dev *dev, uint32_t index, uint16_t limit,
                                const char **reason) {
  wr(dev, VIRTIO_MMIO_QUEUE_SEL, index);
  uint32_t max = rd(dev, VIRTIO_MMIO_QUEUE_NUM_MAX);
  if (rd(dev, VIRTIO_MMIO_QUEUE_READY) != 0) {
    fail(dev, "queue already in use", reason);
    return 0;
  }
  if (max == 0) {
    fail(dev, "queue not available", reason);
    return 0;
  }
  return (uint16_t)(max < limit ? max : limit);
}

void virtio_mmio_give_queue(struct virtio_mmio_dev *dev, uint32_t index, uint16_t size,
                            const void *desc, const void *avail, const void *used) {
  wr(dev, VIRTIO_MMIO_QUEUE_SEL, index);
  wr(dev, VIRTIO_MMIO_QUEUE_NUM, size);
  /* Identity-mapped: these addresses are guest-physical, and below 4 GiB. */
  wr(dev, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)(uint64_t)desc);
  wr(dev, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)((uint64_t)desc >> 32));
  wr(dev, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)(uint64_t)avail);
  wr(dev, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, (uint32_t)((uint64_t)avail >> 32));
  wr(dev, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)(uint64_t)used);
  wr(dev, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, (uint32_t)((uint64_t)used >> 32));
  wr(dev, VIRTIO_MMIO_QUEUE_READY, 1);
}

int virtio_mmio_setup_queue(struct virtio_mmio_dev *dev, uint32_t index, struct virtq *q,
                            const char **reason) {
  uint16_t size = virtio_mmio_queue_size(dev, index, VIRTQ_MAX_SIZE, reason);
  if (size == 0) return 0;
  virtq_init(q, size);
  virtio_mmio_give_queue(dev, index, q->size, q->desc, &q->avail, &q->used);
  return 1;
}

int virtio_mmio_driver_ok(struct virtio_mmio_dev *dev, const char **reason) {
  wr(dev, VIRTIO_MMIO_STATUS,
     VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
         VIRTIO_STATUS_DRIVER_OK);
  uint32_t status = rd(dev, VIRTIO_MMIO_STATUS);
  if (status & VIRTIO_STATUS_NEEDS_RESET)
    return fail(dev, "device needs reset at DRIVER_OK", reason);
  if (!(status & VIRTIO_STATUS_DRIVER_OK)) return fail(dev, "device refused DRIVER_OK", reason);
  return 1;
}

void virtio_mmio_notify(const struct virtio_mmio_dev *dev, uint32_t index) {
  compiler_barrier(); /* ring updates before the write that makes the device look */
  wr(dev, VIRTIO_MMIO_QUEUE_NOTIFY, index);
}

int virtio_mmio_wait_used(const struct virtio_mmio_dev *dev, struct virtq *q, const char **reason) {
  uint32_t polls = 0;
  while (!virtq_has_used(q)) {
    if (++polls == WAIT_POLLS) {
      *reason = (rd(dev, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET)
                    ? "device needs reset (it rejected a request)"
                    : "timed out waiting for a used buffer";
      return 0;
    }
  }
  /* Interrupts are off, but the device must still raise the status an interrupt handler
   * would read; acknowledging it is what lets the next one be seen. */
  for (polls = 0; polls < INTERRUPT_POLLS; polls++) {
    uint32_t pending = rd(dev, VIRTIO_MMIO_INTERRUPT_STATUS);
    if (pending & VIRTIO_INTERRUPT_USED_BUFFER) {
      wr(dev, VIRTIO_MMIO_INTERRUPT_ACK, pending);
      return 1;
    }
  }
  *reason = "used buffer returned without the used-buffer interrupt status";
  return 0;
}
