#include "boot_info.h"

#include "lib.h"

void boot_info_read(const uint8_t *zero_page, struct boot_info *info) {
  uint64_t cmdline = *(const uint32_t *)(zero_page + ZP_CMD_LINE_PTR) |
                     ((uint64_t)*(const uint32_t *)(zero_page + ZP_EXT_CMD_LINE_PTR) << 32);
  info->cmdline = (const char *)cmdline;
  info->e820_count = zero_page[ZP_E820_ENTRIES];
  info->e820 = (const struct e820_entry *)(zero_page + ZP_E820_TABLE);
}

const char *cmdline_value(const char *cmdline, const char *key, uint64_t *len) {
  return cmdline_next_value(&cmdline, key, len);
}

const char *cmdline_next_value(const char **cursor, const char *key, uint64_t *len) {
  uint64_t key_len = strlen(key);
  const char *p = *cursor;
  while (*p) {
    while (*p == ' ') p++;
    const char *word = p;
    while (*p && *p != ' ') p++;
    if ((uint64_t)(p - word) > key_len && memcmp(word, key, key_len) == 0 && word[key_len] == '=') {
      *len = (uint64_t)(p - word) - key_len - 1;
      *cursor = p;
      return word + key_len + 1;
    }
  }
  *cursor = p;
  return 0;
}
