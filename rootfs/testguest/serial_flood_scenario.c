/* The `serial-flood` scenario: SERIAL_FLOOD_BYTES written to COM1 as fast as the guest can,
 * never waiting for the transmitter (the VMM's UART always shows it empty), in lines of 64.
 * Everything the guest writes the VMM would otherwise put in the console file;
 * tests/integration/hostile_console_test.cc bounds it. */
#include "hostile.h"
#include "io.h"
#include "scenario.h"
#include "serial.h"

#define COM1 0x3f8
#define CHUNK 4096

static char chunk[CHUNK];

/* One instruction for the whole chunk: the emulated guest spends its time in the byte's VM
 * exits (tens of microseconds each here), not in a loop around them. */
static void write_chunk(void) {
  const char *p = chunk;
  uint64_t n = CHUNK;
  __asm__ volatile("rep outsb" : "+S"(p), "+c"(n) : "d"((uint16_t)COM1) : "memory");
}

int serial_flood_scenario(const struct boot_info *boot, const char **reason) {
  (void)boot;
  (void)reason;
  for (uint32_t i = 0; i < CHUNK; i++) chunk[i] = i % 64 == 63 ? '\n' : (char)('a' + i % 26);
  for (uint32_t i = 0; i < SERIAL_FLOOD_BYTES / CHUNK; i++) write_chunk();
  serial_puts("serial-flood: done\n");
  return 1;
}
