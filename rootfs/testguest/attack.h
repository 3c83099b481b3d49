/* The attacks every device suffers in the `*-attacks` scenarios (attack.c), against
 * tests/integration/hostile_attack_test.cc and hostile_net_test.cc. Each attack breaks one
 * rule of the virtio 1.x spec on the device's attacked queue (or its registers), checks what
 * the device did, resets the device and proves it serves again. The guest prints
 *   attack <device> <attack>: <outcome>
 * per attack (outcomes below), which the host test matches against the device's metrics. */
#pragma once

#include <stdint.h>

#include "boot_info.h"
#include "hostile.h"
#include "virtio_mmio.h"
#include "virtqueue.h"

/* One device under attack: a driver of the test guest, brought up with its usual init. */
struct attack_target {
  const char *name; /* "blk", "net", "vsock" */
  /* The device and its attacked queue (valid after bring_up). */
  struct virtio_mmio_dev *dev;
  struct virtq *q;
  uint32_t qindex;
  /* Resets the device and brings it to DRIVER_OK with the driver's usual set-up. 1, or 0
   * with *reason set. */
  int (*bring_up)(const char *cmdline, const char **reason);
  /* One well-formed request through the driver, start to finish: the device serves. */
  int (*use)(const char **reason);
  /* Makes one well-formed chain available on q without notifying; its head, or -1. */
  int (*add_valid)(void);
  /* A request larger than the device takes (a frame past the MTU, a vsock payload past
   * its maximum, a read past the disk's end): made available and notified; returns 1 when
   * the device dropped or failed it as expected, 0 with *reason set. */
  int (*oversized)(const char **reason);
};

/* Runs every attack on `t`; 1 when the device behaved as the spec says each time. */
int run_attacks(const struct boot_info *boot, const struct attack_target *t,
                const char **reason);
