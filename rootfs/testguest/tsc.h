/* Time in the guest: the TSC, which runs at the host's rate (about 2.4 GHz on the development
 * machines) whether guest instructions are emulated or not. */
#pragma once

#include <stdint.h>

/* Roughly one second of TSC cycles; scenarios only need the order of magnitude. */
#define TSC_PER_SECOND 2400000000ull

static inline uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}
