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

/* virtio-mmio registers are 32 bits wide and must be accessed as such (spec 4.2.2.2). */
static inline uint32_t mmio_read32(uint64_t addr) { return *(volatile uint32_t *)addr; }

static inline void mmio_write32(uint64_t addr, uint32_t value) {
  *(volatile uint32_t *)addr = value;
}

/* Keeps the compiler from moving memory accesses across it. x86 orders stores among
 * themselves and before the trapping MMIO write that follows, so no fence instruction is
 * needed for ring updates the device reads after a notify. */
static inline void compiler_barrier(void) { __asm__ volatile("" : : : "memory"); }

static inline void halt_forever(void) {
  for (;;) __asm__ volatile("cli; hlt");
}
