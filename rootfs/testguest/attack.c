/* The attacks of attack.h, generic over the device: each writes what a broken or malicious
 * driver might into the attacked queue's rings or the transport's registers. */
#include "attack.h"

#include "lib.h"
#include "serial.h"
#include "tsc.h"

#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTIO_F_INDIRECT_DESC 28
/* How long the device may take to react to an attack: it runs on the VMM thread. */
#define REACT_CYCLES (3 * TSC_PER_SECOND)

/* Where the bad descriptors point when the address itself is not the attack. */
static uint8_t scratch[4096] __attribute__((aligned(4096)));
/* An indirect table one entry longer than any queue of the guest's. */
static struct virtq_desc indirect[VIRTQ_MAX_SIZE + 1] __attribute__((aligned(16)));
/* The end of the highest RAM range of the e820 map. */
static uint64_t ram_end;

static uint32_t status(const struct attack_target *t) {
  return virtio_mmio_read(t->dev, VIRTIO_MMIO_STATUS);
}

/* Makes `head` available on the attacked queue and notifies. */
static void publish(const struct attack_target *t, uint16_t head) {
  struct virtq *q = t->q;
  q->avail.ring[q->avail.idx % q->size] = head;
  compiler_barrier();
  *(volatile uint16_t *)&q->avail.idx = (uint16_t)(q->avail.idx + 1);
  virtio_mmio_notify(t->dev, t->qindex);
}

static const char *await_needs_reset(const struct attack_target *t, const char **reason) {
  uint64_t deadline = rdtsc() + REACT_CYCLES;
  while (!(status(t) & VIRTIO_STATUS_NEEDS_RESET)) {
    if (rdtsc() > deadline) {
      *reason = virtq_has_used(t->q) ? "the device served a chain that breaks the spec"
                                     : "the device neither served nor set NEEDS_RESET";
      return 0;
    }
  }
  return OUTCOME_NEEDS_RESET;
}

/* Waits for the chain just made available to come back, the device still running. */
static int await_used(const struct attack_target *t, const char **reason) {
  uint64_t deadline = rdtsc() + REACT_CYCLES;
  while (!virtq_has_used(t->q)) {
    if (rdtsc() > deadline) {
      *reason = (status(t) & VIRTIO_STATUS_NEEDS_RESET) ? "device needs reset after a valid request"
                                                       : "a valid request was never served";
      return 0;
    }
  }
  return 1;
}

/* A valid chain, notified and served. */
static int serve_one(const struct attack_target *t, const char **reason) {
  if (t->add_valid() < 0) {
    *reason = "no room for a valid request";
    return 0;
  }
  virtio_mmio_notify(t->dev, t->qindex);
  return await_used(t, reason);
}

/* One readable descriptor of `len` bytes at `addr`, published alone. */
static const char *single_buffer(const struct attack_target *t, uint64_t addr, uint32_t len,
                                 const char **reason) {
  t->q->desc[0] = (struct virtq_desc){addr, len, 0, 0};
  publish(t, 0);
  return await_needs_reset(t, reason);
}

static const char *desc_loop(const struct attack_target *t, const char **reason) {
  t->q->desc[0] = (struct virtq_desc){(uint64_t)scratch, 16, VIRTQ_DESC_F_NEXT, 1};
  t->q->desc[1] = (struct virtq_desc){(uint64_t)scratch, 16, VIRTQ_DESC_F_NEXT, 0};
  publish(t, 0);
  return await_needs_reset(t, reason);
}

static const char *desc_self(const struct attack_target *t, const char **reason) {
  t->q->desc[0] = (struct virtq_desc){(uint64_t)scratch, 16, VIRTQ_DESC_F_NEXT, 0};
  publish(t, 0);
  return await_needs_reset(t, reason);
}

/* Through an indirect table (negotiated for this attack), since a direct chain cannot be
 * longer than the queue without visiting a descriptor twice. */
static const char *chain_too_long(const struct attack_target *t, const char **reason) {
  if (!(t->dev->features & (1ull << VIRTIO_F_INDIRECT_DESC))) {
    *reason = "the device does not offer VIRTIO_F_INDIRECT_DESC";
    return 0;
  }
  uint16_t n = (uint16_t)(t->q->size + 1);
  for (uint16_t i = 0; i < n; i++) {
    indirect[i] = (struct virtq_desc){(uint64_t)scratch, 16,
                                      (uint16_t)(i + 1 < n ? VIRTQ_DESC_F_NEXT : 0),
                                      (uint16_t)(i + 1)};
  }
  t->q->desc[0] = (struct virtq_desc){(uint64_t)indirect, (uint32_t)(n * sizeof(indirect[0])),
                                      VIRTQ_DESC_F_INDIRECT, 0};
  publish(t, 0);
  return await_needs_reset(t, reason);
}

/* Starts in RAM, ends past its last byte. */
static const char *len_past_memory(const struct attack_target *t, const char **reason) {
  return single_buffer(t, ram_end - 256, 4096, reason);
}

/* The device's own register window: MMIO, no RAM behind it. */
static const char *buffer_in_mmio_gap(const struct attack_target *t, const char **reason) {
  return single_buffer(t, t->dev->base, 256, reason);
}

static const char *avail_idx_jump(const struct attack_target *t, const char **reason) {
  struct virtq *q = t->q;
  *(volatile uint16_t *)&q->avail.idx = (uint16_t)(q->avail.idx + q->size + 1);
  virtio_mmio_notify(t->dev, t->qindex);
  return await_needs_reset(t, reason);
}

static const char *avail_head_beyond(const struct attack_target *t, const char **reason) {
  publish(t, (uint16_t)(t->q->size + 5));
  return await_needs_reset(t, reason);
}

/* The used ring is the device's: a driver's store to its index must not steer the device. */
static const char *used_idx_scribble(const struct attack_target *t, const char **reason) {
  struct virtq *q = t->q;
  uint16_t before = q->last_used;
  int head = t->add_valid();
  if (head < 0) {
    *reason = "no room for a valid request";
    return 0;
  }
  *(volatile uint16_t *)&q->used.idx = (uint16_t)(before + 100);
  virtio_mmio_notify(t->dev, t->qindex);
  uint64_t deadline = rdtsc() + REACT_CYCLES;
  while (*(volatile uint16_t *)&q->used.idx != (uint16_t)(before + 1)) {
    if (rdtsc() > deadline) {
      *reason = "the device followed the driver's used index";
      return 0;
    }
  }
  if (q->used.ring[before % q->size].id != (uint32_t)head) {
    *reason = "the device returned another head than the one made available";
    return 0;
  }
  return OUTCOME_IGNORED;
}

/* Queue registers written while the queue is live (spec 4.2.2.3: the driver must not). */
static const char *queue_changed_after_driver_ok(const struct attack_target *t,
                                                 const char **reason) {
  struct virtio_mmio_dev *dev = t->dev;
  uint16_t size = t->q->size;
  virtio_mmio_write(dev, VIRTIO_MMIO_QUEUE_SEL, t->qindex);
  virtio_mmio_write(dev, VIRTIO_MMIO_QUEUE_NUM, size / 2);
  virtio_mmio_write(dev, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)(uint64_t)scratch);
  virtio_mmio_write(dev, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)(uint64_t)scratch + 1024);
  virtio_mmio_write(dev, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)(uint64_t)scratch + 2048);
  virtio_mmio_write(dev, VIRTIO_MMIO_QUEUE_READY, 0);
  if (virtio_mmio_read(dev, VIRTIO_MMIO_QUEUE_NUM) != size ||
      virtio_mmio_read(dev, VIRTIO_MMIO_QUEUE_READY) != 1 ||
      virtio_mmio_read(dev, VIRTIO_MMIO_QUEUE_DESC_LOW) != (uint32_t)(uint64_t)t->q->desc ||
      virtio_mmio_read(dev, VIRTIO_MMIO_QUEUE_DEVICE_LOW) != (uint32_t)(uint64_t)&t->q->used) {
    *reason = "the device took a queue register write after DRIVER_OK";
    return 0;
  }
  return serve_one(t, reason) ? OUTCOME_IGNORED : 0;
}

/* A bit the device does not offer, with VIRTIO_F_VERSION_1, then FEATURES_OK. */
static const char *unoffered_feature(const struct attack_target *t, const char **reason) {
  struct virtio_mmio_dev *dev = t->dev;
  virtio_mmio_write(dev, VIRTIO_MMIO_STATUS, 0);
  virtio_mmio_write(dev, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
  virtio_mmio_write(dev, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
  virtio_mmio_write(dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
  uint64_t offered = virtio_mmio_read(dev, VIRTIO_MMIO_DEVICE_FEATURES);
  virtio_mmio_write(dev, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
  offered |= (uint64_t)virtio_mmio_read(dev, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
  unsigned bit = 0;
  while (bit < 64 && (offered >> bit) & 1) bit++;
  uint64_t features = (1ull << VIRTIO_F_VERSION_1) | (1ull << bit);
  virtio_mmio_write(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
  virtio_mmio_write(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)features);
  virtio_mmio_write(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
  virtio_mmio_write(dev, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
  virtio_mmio_write(dev, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                                                 VIRTIO_STATUS_FEATURES_OK);
  if (status(t) & VIRTIO_STATUS_FEATURES_OK) {
    *reason = "the device took a feature bit it never offered";
    return 0;
  }
  return OUTCOME_REFUSED;
}

/* Every device's configuration is read-only to this driver (no feature that makes a field
 * writable is negotiated). */
static const char *config_write(const struct attack_target *t, const char **reason) {
  uint32_t before = virtio_mmio_config32(t->dev, 0);
  virtio_mmio_write(t->dev, VIRTIO_MMIO_CONFIG, ~before);
  if (virtio_mmio_config32(t->dev, 0) != before) {
    *reason = "a write changed the device's read-only configuration";
    return 0;
  }
  return serve_one(t, reason) ? OUTCOME_IGNORED : 0;
}

/* Notifications with nothing new, and to a queue that does not exist. */
static const char *notify_storm(const struct attack_target *t, const char **reason) {
  for (uint32_t i = 0; i < ATTACK_NOTIFY_STORM; i++) virtio_mmio_notify(t->dev, t->qindex);
  for (uint32_t i = 0; i < ATTACK_NOTIFY_STORM / 100; i++) virtio_mmio_notify(t->dev, 0xffff);
  return serve_one(t, reason) ? OUTCOME_SURVIVED : 0;
}

static const char *oversized(const struct attack_target *t, const char **reason) {
  if (!t->oversized(reason)) return 0;
  if (status(t) & VIRTIO_STATUS_NEEDS_RESET) {
    *reason = "the device wants a reset for a request it should only drop";
    return 0;
  }
  return OUTCOME_DROPPED;
}

struct attack {
  const char *name;
  const char *(*run)(const struct attack_target *t, const char **reason);
  uint64_t features; /* optional features the attack needs negotiated */
};

static const struct attack kAttacks[] = {
    {"desc-loop", desc_loop, 0},
    {"desc-self", desc_self, 0},
    {"chain-too-long", chain_too_long, 1ull << VIRTIO_F_INDIRECT_DESC},
    {"len-past-memory", len_past_memory, 0},
    {"buffer-in-mmio-gap", buffer_in_mmio_gap, 0},
    {"avail-idx-jump", avail_idx_jump, 0},
    {"avail-head-beyond", avail_head_beyond, 0},
    {"used-idx-scribble", used_idx_scribble, 0},
    {"queue-changed-after-driver-ok", queue_changed_after_driver_ok, 0},
    {"unoffered-feature", unoffered_feature, 0},
    {"config-write", config_write, 0},
    {"notify-storm", notify_storm, 0},
    {"oversized", oversized, 0},
};

static void find_ram_end(const struct boot_info *boot) {
  ram_end = 0;
  for (uint32_t i = 0; i < boot->e820_count; i++) {
    const struct e820_entry *e = &boot->e820[i];
    if (e->type == E820_RAM && e->addr + e->size > ram_end) ram_end = e->addr + e->size;
  }
}

int run_attacks(const struct boot_info *boot, const struct attack_target *t,
                const char **reason) {
  find_ram_end(boot);
  for (uint64_t i = 0; i < sizeof(kAttacks) / sizeof(kAttacks[0]); i++) {
    const struct attack *a = &kAttacks[i];
    virtio_mmio_extra_optional = a->features;
    int up = t->bring_up(boot->cmdline, reason);
    virtio_mmio_extra_optional = 0;
    if (!up) return 0;
    const char *outcome = a->run(t, reason);
    serial_puts("attack ");
    serial_puts(t->name);
    serial_putc(' ');
    serial_puts(a->name);
    serial_puts(": ");
    serial_puts(outcome ? outcome : *reason);
    serial_putc('\n');
    if (!outcome) return 0;
    /* The reset in bring_up is what brings a device out of NEEDS_RESET. */
    if (!t->bring_up(boot->cmdline, reason) || !t->use(reason)) {
      serial_puts("attack: the device is unusable after a reset\n");
      return 0;
    }
  }
  return 1;
}
