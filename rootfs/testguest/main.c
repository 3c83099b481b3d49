/* Ember's test guest: a freestanding kernel the VMM boots exactly as it boots Linux. It
 * reports on COM1, marks boot time, runs the scenarios named by `ember.test=a,b,...`, prints
 * `PASS name` or `FAIL name reason` for each, and resets the machine through the i8042. */
#include <stdint.h>

#include "boot_info.h"
#include "io.h"
#include "lib.h"
#include "scenario.h"
#include "serial.h"

#define BOOT_TIMER_ADDR 0xd0000000ull
#define BOOT_TIMER_MAGIC 123
#define I8042_COMMAND_PORT 0x64
#define I8042_RESET_CPU 0xfe

static const struct scenario *find_scenario(const char *name, uint64_t len) {
  for (const struct scenario *s = kScenarios; s->name; s++) {
    if (strlen(s->name) == len && memcmp(s->name, name, len) == 0) return s;
  }
  return 0;
}

static void run_scenarios(const struct boot_info *boot) {
  uint64_t len = 0;
  const char *list = cmdline_value(boot->cmdline, "ember.test", &len);
  const char *end = list ? list + len : 0;
  while (list && list < end) {
    const char *name = list;
    while (list < end && *list != ',') list++;
    uint64_t name_len = (uint64_t)(list - name);
    if (list < end) list++; /* skip the comma */
    if (name_len == 0) continue;

    const struct scenario *s = find_scenario(name, name_len);
    const char *reason = "unknown scenario";
    int passed = s && s->run(boot, &reason);
    serial_puts(passed ? "PASS " : "FAIL ");
    serial_write(name, name_len);
    if (!passed) {
      serial_putc(' ');
      serial_puts(reason);
    }
    serial_putc('\n');
  }
}

void guest_main(const uint8_t *zero_page) {
  struct boot_info boot;
  boot_info_read(zero_page, &boot);
  serial_puts("Ember test guest\nCommand line: ");
  serial_puts(boot.cmdline);
  serial_putc('\n');
  mmio_write8(BOOT_TIMER_ADDR, BOOT_TIMER_MAGIC);
  run_scenarios(&boot);
  serial_puts("Resetting\n");
  outb(I8042_COMMAND_PORT, I8042_RESET_CPU);
  halt_forever();
}
