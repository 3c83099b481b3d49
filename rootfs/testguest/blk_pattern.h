/* The disk contents the `blk` scenarios and their host-side test agree on. Included by the
 * freestanding guest (C) and by tests/integration/virtio_blk_test.cc (C++), so: plain C,
 * no libc, no casts (the C++ build rejects old-style casts; masking keeps -Wconversion
 * quiet). */
#pragma once

#include <stdint.h>

#define BLK_SECTOR_SIZE 512u
/* The host's image is exactly this long (32 KiB); the guest checks the capacity it reads. */
#define BLK_DISK_SECTORS 64u
/* The guest reads and checks sectors [0, BLK_READ_SECTORS) and the last sector... */
#define BLK_READ_SECTORS 8u
/* ...overwrites [BLK_WRITE_FIRST, BLK_WRITE_FIRST + BLK_WRITE_SECTORS) with the written
 * pattern (straddling the end of the range read, so a shifted write shows on both sides),
 * and leaves every other sector as it was. */
#define BLK_WRITE_FIRST 6u
#define BLK_WRITE_SECTORS 4u
/* The drive_id the host configures; the guest compares VIRTIO_BLK_T_GET_ID's answer. */
#define BLK_DRIVE_ID "scratch"

/* Byte i of sector s as the host creates the image. Differs between neighbouring bytes,
 * between halves of a sector and between sectors, so a misplaced transfer never matches. */
static inline uint8_t blk_initial(uint32_t sector, uint32_t i) {
  return (sector * 0x9du + i + (i >> 8) * 0x3bu + 0x11u) & 0xffu;
}

/* Byte i of sector s as the guest writes it: differs from blk_initial in every byte. */
static inline uint8_t blk_written(uint32_t sector, uint32_t i) {
  return (blk_initial(sector, i) ^ (0x80u | ((sector * 7u + i) & 0x7fu))) & 0xffu;
}
