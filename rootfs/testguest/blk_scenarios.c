/* The `blk`, `blk-ro` and `blk-reset` scenarios: drive the first virtio-blk device against
 * the pattern of blk_pattern.h, which the host test put on the disk and checks afterwards. */
#include "blk_pattern.h"
#include "lib.h"
#include "scenario.h"
#include "serial.h"
#include "virtio_blk.h"

/* read_initial's chain covers sectors 1..7 as 1 + 2 + 4, and writes reuse its buffer. */
_Static_assert(BLK_READ_SECTORS == 8, "read_initial's chain assumes 8 sectors");
_Static_assert(BLK_WRITE_SECTORS <= BLK_READ_SECTORS, "the write buffer is the read buffer");

static struct virtio_blk blk;
static uint8_t data[BLK_READ_SECTORS * BLK_SECTOR_SIZE] __attribute__((aligned(512)));
static uint8_t last[BLK_SECTOR_SIZE] __attribute__((aligned(512)));
static uint8_t id[VIRTIO_BLK_ID_BYTES];

/* Which pattern of blk_pattern.h; a flag, not a function pointer, so the per-byte
 * function inlines (every guest instruction is emulated). */
enum pattern { INITIAL, WRITTEN };

static inline uint8_t expected(enum pattern pattern, uint32_t sector, uint32_t i) {
  return pattern == WRITTEN ? blk_written(sector, i) : blk_initial(sector, i);
}

/* Checks `count` sectors from `first` in buf against `pattern`, printing the first
 * mismatching byte: a reason string alone could not say where. */
static int check(const uint8_t *buf, uint32_t first, uint32_t count, enum pattern pattern,
                 const char *what, const char **reason) {
  for (uint32_t s = 0; s < count; s++) {
    for (uint32_t i = 0; i < BLK_SECTOR_SIZE; i++) {
      if (buf[s * BLK_SECTOR_SIZE + i] != expected(pattern, first + s, i)) {
        serial_puts("blk: sector ");
        serial_put_dec(first + s);
        serial_puts(" byte ");
        serial_put_dec(i);
        serial_puts(" is ");
        serial_put_hex(buf[s * BLK_SECTOR_SIZE + i]);
        serial_putc('\n');
        *reason = what;
        return 0;
      }
    }
  }
  return 1;
}

static void fill(uint8_t *buf, uint32_t first, uint32_t count, enum pattern pattern) {
  for (uint32_t s = 0; s < count; s++) {
    for (uint32_t i = 0; i < BLK_SECTOR_SIZE; i++)
      buf[s * BLK_SECTOR_SIZE + i] = expected(pattern, first + s, i);
  }
}

static int init(const struct boot_info *boot, const char **reason) {
  if (!virtio_blk_init(&blk, boot->cmdline, reason)) return 0;
  serial_puts("blk: capacity ");
  serial_put_dec(blk.capacity);
  serial_puts(" sectors, features ");
  serial_put_hex(blk.dev.features);
  serial_putc('\n');
  if (blk.capacity != BLK_DISK_SECTORS) {
    *reason = "capacity is not the image's size";
    return 0;
  }
  return 1;
}

/* Reads sectors [0, BLK_READ_SECTORS), the last sector and the drive id in one batch of
 * four requests, one of them a chain of three data buffers, and checks them all. */
static int read_initial(const char **reason) {
  struct virtio_blk_seg first = {data, BLK_SECTOR_SIZE};
  struct virtio_blk_seg rest[3] = {{data + 1 * BLK_SECTOR_SIZE, 1 * BLK_SECTOR_SIZE},
                                   {data + 2 * BLK_SECTOR_SIZE, 2 * BLK_SECTOR_SIZE},
                                   {data + 4 * BLK_SECTOR_SIZE, 4 * BLK_SECTOR_SIZE}};
  struct virtio_blk_seg tail = {last, BLK_SECTOR_SIZE};
  struct virtio_blk_seg name = {id, VIRTIO_BLK_ID_BYTES};
  int tags[4] = {
      virtio_blk_queue(&blk, VIRTIO_BLK_T_IN, 0, &first, 1),
      virtio_blk_queue(&blk, VIRTIO_BLK_T_IN, 1, rest, 3),
      virtio_blk_queue(&blk, VIRTIO_BLK_T_IN, BLK_DISK_SECTORS - 1, &tail, 1),
      virtio_blk_queue(&blk, VIRTIO_BLK_T_GET_ID, 0, &name, 1),
  };
  const uint32_t used_lens[4] = {BLK_SECTOR_SIZE + 1, 7 * BLK_SECTOR_SIZE + 1, BLK_SECTOR_SIZE + 1,
                                 VIRTIO_BLK_ID_BYTES + 1};
  for (int i = 0; i < 4; i++) {
    if (tags[i] < 0) {
      *reason = "queue too small for four requests";
      return 0;
    }
  }
  if (!virtio_blk_complete(&blk, reason)) return 0;
  for (int i = 0; i < 4; i++) {
    if (virtio_blk_status(&blk, tags[i]) != VIRTIO_BLK_S_OK) {
      *reason = i == 3 ? "GET_ID failed" : "read failed";
      return 0;
    }
    if (virtio_blk_used_len(&blk, tags[i]) != used_lens[i]) {
      *reason = "used length is not the bytes written plus the status";
      return 0;
    }
  }
  if (!check(data, 0, BLK_READ_SECTORS, INITIAL, "read data is not the image's", reason) ||
      !check(last, BLK_DISK_SECTORS - 1, 1, INITIAL, "last sector is not the image's", reason)) {
    return 0;
  }
  /* The id is the drive_id, zero-padded to 20 bytes. */
  uint64_t n = strlen(BLK_DRIVE_ID);
  for (uint64_t i = n; i < VIRTIO_BLK_ID_BYTES; i++) {
    if (id[i] != 0) {
      *reason = "GET_ID answer is not zero-padded";
      return 0;
    }
  }
  if (memcmp(id, BLK_DRIVE_ID, n) != 0) {
    *reason = "GET_ID answer is not the configured drive_id";
    return 0;
  }
  return 1;
}

int blk_scenario(const struct boot_info *boot, const char **reason) {
  if (!init(boot, reason) || !read_initial(reason)) return 0;

  /* Overwrite the range with the second pattern, in two segments. */
  fill(data, BLK_WRITE_FIRST, BLK_WRITE_SECTORS, WRITTEN);
  struct virtio_blk_seg out[2] = {
      {data, BLK_SECTOR_SIZE}, {data + BLK_SECTOR_SIZE, (BLK_WRITE_SECTORS - 1) * BLK_SECTOR_SIZE}};
  int status = virtio_blk_request(&blk, VIRTIO_BLK_T_OUT, BLK_WRITE_FIRST, out, 2, reason);
  if (status != VIRTIO_BLK_S_OK) {
    if (status >= 0) *reason = "write failed";
    return 0;
  }
  if (virtio_blk_has(&blk, VIRTIO_BLK_F_FLUSH)) {
    status = virtio_blk_request(&blk, VIRTIO_BLK_T_FLUSH, 0, 0, 0, reason);
    if (status != VIRTIO_BLK_S_OK) {
      if (status >= 0) *reason = "flush failed";
      return 0;
    }
    serial_puts("blk: flushed\n");
  }

  /* Read it back: the device serves later reads from what it wrote. */
  memset(data, 0, BLK_WRITE_SECTORS * BLK_SECTOR_SIZE);
  struct virtio_blk_seg in = {data, BLK_WRITE_SECTORS * BLK_SECTOR_SIZE};
  status = virtio_blk_request(&blk, VIRTIO_BLK_T_IN, BLK_WRITE_FIRST, &in, 1, reason);
  if (status != VIRTIO_BLK_S_OK) {
    if (status >= 0) *reason = "read-back failed";
    return 0;
  }
  if (!check(data, BLK_WRITE_FIRST, BLK_WRITE_SECTORS, WRITTEN, "read-back differs from the write",
             reason)) {
    return 0;
  }

  /* A read past the end fails for that request only. */
  struct virtio_blk_seg beyond = {last, BLK_SECTOR_SIZE};
  status = virtio_blk_request(&blk, VIRTIO_BLK_T_IN, BLK_DISK_SECTORS, &beyond, 1, reason);
  if (status != VIRTIO_BLK_S_IOERR) {
    if (status >= 0) *reason = "read past the end did not fail with IOERR";
    return 0;
  }
  return 1;
}

int blk_ro_scenario(const struct boot_info *boot, const char **reason) {
  if (!init(boot, reason)) return 0;
  if (!virtio_blk_has(&blk, VIRTIO_BLK_F_RO)) {
    *reason = "read-only drive does not offer VIRTIO_BLK_F_RO";
    return 0;
  }
  if (!read_initial(reason)) return 0;

  fill(data, 0, 1, WRITTEN);
  struct virtio_blk_seg out = {data, BLK_SECTOR_SIZE};
  int status = virtio_blk_request(&blk, VIRTIO_BLK_T_OUT, 0, &out, 1, reason);
  if (status != VIRTIO_BLK_S_IOERR) {
    if (status >= 0) *reason = "write to a read-only drive did not fail with IOERR";
    return 0;
  }
  /* The failed write left the disk as it was. */
  memset(data, 0, BLK_SECTOR_SIZE);
  struct virtio_blk_seg in = {data, BLK_SECTOR_SIZE};
  status = virtio_blk_request(&blk, VIRTIO_BLK_T_IN, 0, &in, 1, reason);
  if (status != VIRTIO_BLK_S_OK) {
    if (status >= 0) *reason = "read after the refused write failed";
    return 0;
  }
  return check(data, 0, 1, INITIAL, "refused write changed the disk", reason);
}

/* Reads of the whole disk queued and notified, then at once the driver resets the device (the
 * first step of bringing it up again), as a driver being unloaded with I/O outstanding might:
 * the device must come through the reset with those reads still in flight on the host, report
 * none of them into the new queue, and serve it. */
int blk_reset_scenario(const struct boot_info *boot, const char **reason) {
  static uint8_t whole[4][BLK_DISK_SECTORS / 4 * BLK_SECTOR_SIZE] __attribute__((aligned(512)));
  if (!init(boot, reason)) return 0;
  for (uint32_t i = 0; i < 4; i++) {
    struct virtio_blk_seg seg = {whole[i], sizeof(whole[i])};
    if (virtio_blk_queue(&blk, VIRTIO_BLK_T_IN, i * (BLK_DISK_SECTORS / 4), &seg, 1) < 0) {
      *reason = "queue too small for four requests";
      return 0;
    }
  }
  virtio_mmio_notify(&blk.dev, 0);
  return init(boot, reason) && read_initial(reason);
}
