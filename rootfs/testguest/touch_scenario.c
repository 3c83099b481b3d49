/* The `touch` scenario, the fixture of the post-restore working-set benchmark (perf/
 * snapshot_bench.cc): fills 32 MiB of memory (one word per page, so every page holds data),
 * prints "touch ready", then waits for a byte on the serial console. The host snapshots it
 * while it waits; a restored copy, given the byte, reads and rewrites every one of those pages,
 * checks what it read, and prints "touched". Host-side time from the restore command to that
 * line is how long the guest took to get its working set back. */
#include <stdint.h>

#include "io.h"
#include "scenario.h"
#include "serial.h"

#define TOUCH_BASE 0x4000000ull  /* 64 MiB: above the guest image, inside a 128 MiB guest */
#define TOUCH_PAGES 8192u        /* 32 MiB */
#define WORDS_PER_PAGE 512u
#define COM1 0x3f8
#define LSR_DATA_READY 0x01

static uint64_t pattern(uint32_t page) { return (uint64_t)page * 0x9e3779b97f4a7c15ull | 1; }

int touch_scenario(const struct boot_info *boot, const char **reason) {
  (void)boot;
  volatile uint64_t *mem = (volatile uint64_t *)TOUCH_BASE; /* identity-mapped guest RAM */
  for (uint32_t page = 0; page < TOUCH_PAGES; page++) mem[page * WORDS_PER_PAGE] = pattern(page);
  serial_puts("touch ready\n");
  while (!(inb(COM1 + 5) & LSR_DATA_READY)) {
  }
  (void)inb(COM1);
  uint32_t wrong = 0;
  for (uint32_t page = 0; page < TOUCH_PAGES; page++) {
    uint64_t value = mem[page * WORDS_PER_PAGE];
    if (value != pattern(page)) wrong++;
    mem[page * WORDS_PER_PAGE] = value + 2;
  }
  if (wrong != 0) {
    *reason = "touched pages did not hold what was written before the snapshot";
    return 0;
  }
  serial_puts("touched\n");
  return 1;
}
