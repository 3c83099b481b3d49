/* Port and MMIO access. Every access is one VM exit, which costs ~9 us under the
 * development machines' emulated KVM: keep them few. */
#pragma once

#include <stdint.h>

static inline void outb(uint16_t port, uint8_t value) {
  __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline uint8_t inb(uint16_t port) {
  uint8_t value;
  __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
  return value;
}

static inline void mmio_write8(uint64_t addr, uint8_t value) {
  *(volatile uint8_t *)addr = value;
}

static inline void halt_forever(void) {
  for (;;) __asm__ volatile("cli; hlt");
}
