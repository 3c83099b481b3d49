/* What the guest reads from the zero page, at the offsets of the boot protocol
 * (Documentation/arch/x86/zero-page.rst and boot.rst). */
#pragma once

#include <stdint.h>

#define ZP_EXT_CMD_LINE_PTR 0x0c8
#define ZP_E820_ENTRIES 0x1e8
#define ZP_CMD_LINE_PTR 0x228
#define ZP_E820_TABLE 0x2d0

#define E820_RAM 1

struct e820_entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
} __attribute__((packed));

struct boot_info {
  const char *cmdline;
  const struct e820_entry *e820;
  uint32_t e820_count;
};

void boot_info_read(const uint8_t *zero_page, struct boot_info *info);

/* The value of `key=` on the command line (up to the next space), or 0 when absent;
 * *len receives its length. */
const char *cmdline_value(const char *cmdline, const char *key, uint64_t *len);

/* Like cmdline_value, for keys that may appear several times (one virtio_mmio.device= per
 * device): searches from *cursor (start it at the command line) and leaves *cursor after
 * the token found, so the next call finds the next one. */
const char *cmdline_next_value(const char **cursor, const char *key, uint64_t *len);
