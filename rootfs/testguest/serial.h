/* Output on COM1, polled (the guest runs with interrupts off). */
#pragma once

#include <stdint.h>

void serial_putc(char c);
void serial_puts(const char *s);
/* Writes exactly n bytes of s. */
void serial_write(const char *s, uint64_t n);
void serial_put_dec(uint64_t value);
void serial_put_hex(uint64_t value);
