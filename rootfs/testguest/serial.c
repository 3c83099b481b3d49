#include "serial.h"

#include "io.h"

#define COM1 0x3f8
#define LSR_THR_EMPTY 0x20

void serial_putc(char c) {
  while (!(inb(COM1 + 5) & LSR_THR_EMPTY)) {
  }
  outb(COM1, (uint8_t)c);
}

void serial_write(const char *s, uint64_t n) {
  for (uint64_t i = 0; i < n; i++) serial_putc(s[i]);
}

void serial_puts(const char *s) {
  while (*s) serial_putc(*s++);
}

void serial_put_dec(uint64_t value) {
  char buf[21];
  int i = 20;
  buf[i] = 0;
  do {
    buf[--i] = (char)('0' + value % 10);
    value /= 10;
  } while (value);
  serial_puts(&buf[i]);
}

void serial_put_hex(uint64_t value) {
  static const char digits[] = "0123456789abcdef";
  char buf[19];
  int i = 18;
  buf[i] = 0;
  do {
    buf[--i] = digits[value & 0xf];
    value >>= 4;
  } while (value);
  buf[--i] = 'x';
  buf[--i] = '0';
  serial_puts(&buf[i]);
}
