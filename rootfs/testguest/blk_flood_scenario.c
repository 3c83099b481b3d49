/* The `blk-flood` scenario: a driver that makes one read chain available again and again
 * while it is still in flight, as fast as it can bump avail.idx, for a few seconds. The ring
 * is as large as the device allows, every entry naming the read chain except the last of
 * each half, which names a request of an unknown type: the device answers that one at once
 * (UNSUPP), so its status byte tells the driver the device has taken the whole half, and the
 * driver may publish the next one without ever running more than a ring ahead.
 *
 * The read is as long a chain as the ring allows, every data descriptor naming the same page:
 * a ring of such reads costs the host more than publishing it costs the guest (whose
 * instructions are emulated here), so the device never catches up, and each read in flight
 * costs the host an iovec per descriptor.
 *
 * A device that takes the flood holds its VMM thread and the reads pile up on the host; one
 * that bounds its requests in flight stops it (NEEDS_RESET). Either way the driver then
 * resets the device and checks that it serves a plain read, and the host test measures what
 * the flood cost the VMM. */
#include "flood_ring.h"
#include "hostile.h"
#include "scenario.h"
#include "serial.h"
#include "tsc.h"
#include "virtio_blk.h"

#define FLOOD_CYCLES (3 * TSC_PER_SECOND)
/* A device that took nothing for this long has stopped serving the ring. */
#define STALL_CYCLES (2 * TSC_PER_SECOND)
/* Not a request type of the spec: answered UNSUPP without touching the disk. */
#define TYPE_UNKNOWN 0x7e
#define STATUS_UNSET 0xff

/* The read chain takes descriptors [0, size - 6): header, data pages, status; the two
 * markers (header, status) the four after it. */
#define READ_HEAD 0
#define MARKER_DESCS 4
#define PAGE 4096

static struct flood_ring ring;
static struct virtio_blk blk;
static struct virtio_blk_req_header read_header, marker_header;
static uint8_t page[PAGE] __attribute__((aligned(PAGE)));
static uint8_t read_status;
static uint8_t marker_status[2];

static void set_desc(uint16_t i, const void *addr, uint32_t len, uint16_t flags) {
  ring.desc[i] = (struct virtq_desc){(uint64_t)addr, len, flags, (uint16_t)(i + 1)};
}

static uint16_t marker_head(uint16_t h) { return (uint16_t)(ring.size - MARKER_DESCS + 2 * h); }

static void lay_out_ring(void) {
  uint16_t pages = (uint16_t)(ring.size - MARKER_DESCS - 2);
  if (pages > BLK_FLOOD_DISK_BYTES / PAGE) pages = BLK_FLOOD_DISK_BYTES / PAGE;
  read_header = (struct virtio_blk_req_header){VIRTIO_BLK_T_IN, 0, 0};
  marker_header = (struct virtio_blk_req_header){TYPE_UNKNOWN, 0, 0};
  set_desc(READ_HEAD, &read_header, sizeof(read_header), VIRTQ_DESC_F_NEXT);
  for (uint16_t i = 1; i <= pages; i++)
    set_desc(i, page, PAGE, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT);
  set_desc((uint16_t)(pages + 1), &read_status, 1, VIRTQ_DESC_F_WRITE);
  for (uint16_t h = 0; h < 2; h++) {
    set_desc(marker_head(h), &marker_header, sizeof(marker_header), VIRTQ_DESC_F_NEXT);
    set_desc((uint16_t)(marker_head(h) + 1), &marker_status[h], 1, VIRTQ_DESC_F_WRITE);
  }
  /* flood_ring_setup left every entry naming head 0, the read. */
  uint16_t half = ring.size / 2;
  ring.avail.ring[half - 1] = marker_head(0);
  ring.avail.ring[ring.size - 1] = marker_head(1);
}

static uint8_t marker(int h) { return *(volatile uint8_t *)&marker_status[h]; }

/* Publishes half number k of the ring (entries [k*half, (k+1)*half)). */
static void publish_half(uint32_t k) {
  marker_status[k % 2] = STATUS_UNSET;
  flood_ring_publish(&ring, ring.size / 2);
  flood_ring_kick(&blk.dev, 0, &ring);
}

/* Waits until half k's marker was answered. 0 when the device stopped taking the ring. */
static int wait_half(uint32_t k) {
  uint64_t deadline = rdtsc() + STALL_CYCLES;
  uint32_t polls = 0;
  while (marker(k % 2) == STATUS_UNSET) {
    /* A status read is a VM exit: only now and then. */
    if ((++polls & 0xfff) == 0 &&
        (virtio_mmio_read(&blk.dev, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET))
      return 0;
    if (rdtsc() > deadline) return 0;
  }
  return 1;
}

/* The flood itself; returns how many requests it made available. */
static uint64_t flood(void) {
  uint32_t half = ring.size / 2;
  serial_puts(BLK_FLOOD_MARKER);
  uint64_t deadline = rdtsc() + FLOOD_CYCLES;
  publish_half(0);
  publish_half(1);
  uint32_t k = 2;
  /* Half k goes out once half k-2 is taken: never more than the ring size ahead. */
  while (rdtsc() < deadline && wait_half(k - 2)) publish_half(k++);
  /* The device takes what is out, unless it stopped. */
  if (wait_half(k - 2)) (void)wait_half(k - 1);
  return (uint64_t)k * half;
}

int blk_flood_scenario(const struct boot_info *boot, const char **reason) {
  if (!virtio_mmio_find(boot->cmdline, VIRTIO_ID_BLOCK, &blk.dev, reason) ||
      !virtio_mmio_negotiate(&blk.dev, 0, 0, reason) ||
      !flood_ring_setup(&blk.dev, 0, &ring, reason) ||
      !virtio_mmio_driver_ok(&blk.dev, reason)) {
    return 0;
  }
  if (ring.size < 16) {
    *reason = "queue too small to flood";
    return 0;
  }
  lay_out_ring();
  uint64_t published = flood();
  int needs_reset = (virtio_mmio_read(&blk.dev, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET) != 0;
  serial_puts("blk-flood: ");
  serial_put_dec(published);
  serial_puts(needs_reset ? " requests made available; the device stopped them (NEEDS_RESET)\n"
                          : " requests made available, all taken\n");

  /* The driver starts over; the device must serve it as if nothing happened. */
  if (!virtio_blk_init(&blk, boot->cmdline, reason)) return 0;
  struct virtio_blk_seg seg = {page, 512};
  int status = virtio_blk_request(&blk, VIRTIO_BLK_T_IN, 0, &seg, 1, reason);
  if (status < 0) return 0;
  if (status != VIRTIO_BLK_S_OK) {
    *reason = "read after the flood failed";
    return 0;
  }
  return 1;
}
