/* The `counter` scenario, the fixture of the snapshot tests: fills a memory region with a
 * pattern and keeps its checksum, then counts slowly, printing "count N". A snapshot taken
 * mid-count and restored in a new VMM must go on counting from where it was (no new
 * banner: no reboot) and still find the region intact. The pace comes from the TSC, so it is
 * roughly the same under emulation and on hardware. */
#include <stdint.h>

#include "scenario.h"
#include "serial.h"
#include "tsc.h"

#define COUNTER_WORDS 8192u          /* 64 KiB of pattern */
#define COUNTER_LIMIT 40u
#define CYCLES_PER_COUNT 100000000ull /* ~50 ms at 2 GHz */

static uint64_t region[COUNTER_WORDS];

static uint64_t checksum(void) {
  uint64_t sum = 0;
  for (uint32_t i = 0; i < COUNTER_WORDS; i++) sum = sum * 31 + region[i];
  return sum;
}

int counter_scenario(const struct boot_info *boot, const char **reason) {
  (void)boot;
  for (uint32_t i = 0; i < COUNTER_WORDS; i++) region[i] = (uint64_t)i * 0x9e3779b97f4a7c15ull;
  uint64_t expected = checksum();
  for (uint32_t n = 1; n <= COUNTER_LIMIT; n++) {
    uint64_t until = rdtsc() + CYCLES_PER_COUNT;
    while (rdtsc() < until) {
    }
    serial_puts("count ");
    serial_put_dec(n);
    serial_putc('\n');
  }
  if (checksum() != expected) {
    *reason = "the memory region's checksum changed";
    return 0;
  }
  serial_puts("checksum ok\n");
  return 1;
}
